// Formulas in the search results' summaries (search.html): typeset with the book's MathJax (bookext/mathjax.py).
// A summary is 240 characters of the page's text, so it can cut a formula: the piece before the first closing
// delimiter without an opening one, or after the last opening one without a closing one, becomes an ellipsis.
document.addEventListener("DOMContentLoaded", () => {
  const results = document.getElementById("search-results");
  if (!results) return;
  const PAIRS = [["\\(", "\\)"], ["\\[", "\\]"]];

  const dropCutFormulas = (text) => {
    for (const [open, close] of PAIRS) {
      const firstClose = text.indexOf(close);
      const firstOpen = text.indexOf(open);
      if (firstClose >= 0 && (firstOpen < 0 || firstClose < firstOpen)) text = "…" + text.slice(firstClose + 2);
      const lastOpen = text.lastIndexOf(open);
      if (lastOpen >= 0 && lastOpen > text.lastIndexOf(close)) text = text.slice(0, lastOpen) + "…";
    }
    return text;
  };

  const typesetSummaries = () => {
    const summaries = [...results.querySelectorAll("p.context:not([data-math])")];
    for (const summary of summaries) {
      const text = dropCutFormulas(summary.textContent);
      if (text !== summary.textContent) summary.textContent = text;
      summary.dataset.math = "typeset";
    }
    if (summaries.length && window.MathJax?.startup) MathJax.startup.promise.then(() => MathJax.typesetPromise(summaries));
  };

  let timer;
  new MutationObserver(() => {
    clearTimeout(timer);
    timer = setTimeout(typesetSummaries, 50);
  }).observe(results, { childList: true, subtree: true });
});
