// MathJax 3, from the site's own copy (make docs installs it from npm): the pages open from file:// offline.
// nbconvert's pages load this file where they would load MathJax; the notebooks write $...$ and $$...$$.
window.MathJax = {
  tex: {
    inlineMath: [['$', '$'], ['\\(', '\\)']],
    displayMath: [['$$', '$$'], ['\\[', '\\]']],
    processEscapes: true,
  },
  svg: {fontCache: 'global'},
};
(function () {
  var script = document.createElement('script');
  script.src = new URL('mathjax/tex-svg.js', document.currentScript.src).href;
  document.head.appendChild(script);
})();
