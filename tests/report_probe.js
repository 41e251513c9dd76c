// Injected into a copy of the Snakemake report by tests/test_report_browser.py; Chromium runs it headless.
// It measures the landing page as the browser laid it out, then shows every result the way the report's eye button
// does (Snakemake's own ButtonViewManager) and records what the browser displayed. The findings are written into
// <pre id="probe-result"> as JSON, which `chromium --dump-dom` returns.
(function () {
    "use strict";

    function box(el) {
        const r = el.getBoundingClientRect();
        return { top: r.top, bottom: r.bottom, width: r.width, height: r.height };
    }

    function decodeDataUri(uri) {
        // data:<mime>[;charset=...];base64,<data>; fetch() of a data: URI never settles under --virtual-time-budget
        const comma = uri.indexOf(",");
        if (!uri.slice(0, comma).endsWith(";base64")) {
            return decodeURIComponent(uri.slice(comma + 1));
        }
        const bytes = Uint8Array.from(atob(uri.slice(comma + 1)), (c) => c.charCodeAt(0));
        return new TextDecoder().decode(bytes);
    }

    async function image(el) {
        if (!el.complete) {
            // not el.decode(): it waits for a frame, which headless Chromium draws only when the time budget is spent
            await new Promise((resolve) => {
                el.addEventListener("load", resolve, { once: true });
                el.addEventListener("error", resolve, { once: true }); // a broken image: naturalWidth stays 0
            });
        }
        return { width: el.naturalWidth, height: el.naturalHeight, box: box(el) };
    }

    async function landing() {
        const root = document.getElementById("landing-results");
        if (root === null) {
            return null;
        }
        const page = root.closest(".prose");
        const images = [];
        for (const el of root.querySelectorAll("img")) {
            images.push(await image(el));
        }
        return {
            viewport: { width: window.innerWidth, height: window.innerHeight },
            title: page.querySelector("h1") ? page.querySelector("h1").innerText : "",
            title_box: page.querySelector("h1") ? box(page.querySelector("h1")) : null,
            tables: Array.from(root.querySelectorAll("table"), (el) => ({ text: el.innerText, box: box(el) })),
            images: images,
            details: Array.from(page.querySelectorAll("details"), (el) => ({
                open: el.open,
                summary: el.querySelector("summary").innerText,
            })),
            text: page.innerText,
            menu: document.querySelector("nav").innerText,
        };
    }

    async function shown(path) {
        // Snakemake's eye button, rendered synchronously; an iframe still loading stalls Chromium's virtual time, so
        // the view goes back to the landing page before anything is awaited
        const entry = results[path];
        const button = new ButtonViewManager(app).handleSelectedResult(path);
        ReactDOM.flushSync(() => button.props.onClick());
        const el = Array.from(document.querySelectorAll("#app img, #app iframe")).find((e) => e.src === entry.data_uri);
        const found = { mime: entry.mime_type, element: el ? el.tagName.toLowerCase() : null };
        if (el && el.tagName === "IFRAME") {
            // its document is cross-origin (a data: URI): read what it was given
            const doc = new DOMParser().parseFromString(decodeDataUri(entry.data_uri), "text/html");
            Object.assign(found, { box: box(el), text: doc.body.innerText, tables: doc.querySelectorAll("table").length });
        } else if (el) {
            Object.assign(found, await image(el));
        }
        ReactDOM.flushSync(() => app.setView({ content: "rulegraph" }));
        return found;
    }

    async function probe() {
        const found = { landing: await landing(), categories: categories, results: {} };
        for (const path of Object.keys(results)) {
            found.results[path] = await shown(path);
        }
        return found;
    }

    function report(found) {
        const pre = document.createElement("pre");
        pre.id = "probe-result";
        pre.textContent = JSON.stringify(found);
        document.body.appendChild(pre);
    }

    window.addEventListener("load", () =>
        setTimeout(() => probe().then(report, (err) => report({ error: String(err && err.stack ? err.stack : err) })), 1000)
    );
})();
