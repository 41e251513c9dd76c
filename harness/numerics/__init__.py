"""The shared numerical mechanics of the methods: losses, ramps, the EMA teacher, signed distance maps and the
contrastive terms."""
