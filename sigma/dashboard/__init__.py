"""The live dashboard's files, shipped as package data and served by `sigma.gateway.static_files`.

Reading order: `static/index.html` (the page), `static/sigma-client.js` (the reusable ES module
that speaks the wire protocol: connect, resume, gaps, subscriptions), `static/dashboard.js` (the
page's rendering, batched per animation frame), `static/dashboard.css`. `static/vendor/uplot/` is
uPlot, vendored as published on npm (see its UPDATE.md). No build step: the files are served as
they are here.
"""
