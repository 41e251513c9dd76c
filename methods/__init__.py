"""Every method of the benchmark, one module each: `harness.method.registry` imports every module of this package,
so adding a method is adding one file (contract: `harness/method/contract.py`, docs: README "Adding a method")."""
