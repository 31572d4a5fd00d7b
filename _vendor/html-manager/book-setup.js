// Written for this book (not part of the npm package); loaded after require.js, before embed-amd.js.

// 1. Point require.js at the widget manager this site serves, so that the fonts it loads resolve to
//    _static/html-manager/ on every page, whatever its depth: the bundle's modules compute their font URLs
//    from their own module ids, "@jupyter-widgets/html-manager/dist/..." and also "@jupyter-widgets/..."
//    (the controls), which without the second entry resolved to <page folder>/@jupyter-widgets/<font>: a 404.
const htmlManager = (document.documentElement.dataset.content_root || "./") + "_static/html-manager";
require.config({
  paths: {
    "@jupyter-widgets/html-manager/dist": htmlManager,
    "@jupyter-widgets": htmlManager,
  },
});

// 2. The widget manager typesets HTML widgets with the MathJax 2 API (MathJax.Hub.Queue); the site
//    runs MathJax 3. Give it the one call it uses, mapped onto MathJax 3's typesetPromise.
document.addEventListener("DOMContentLoaded", () => {
  const mj = window.MathJax;
  if (!mj || mj.Hub) return;
  mj.Hub = {
    Queue(job) {
      const element = Array.isArray(job) ? job[2] : undefined;
      const run = () => mj.typesetPromise && mj.typesetPromise(element ? [element] : undefined);
      return mj.startup && mj.startup.promise ? mj.startup.promise.then(run) : run();
    },
  };
});
