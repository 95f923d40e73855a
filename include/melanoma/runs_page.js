// The runs page's only script, served by the plugin itself: no framework, nothing from
// the internet. The page works without it (sorting, filtering and paging are links and
// forms); it keeps the state of runs in progress live, and enables "Compare" only when 2
// to 4 runs are ticked. Research use only, not a diagnostic device.
"use strict";

(function () {
  const MAX_COMPARED = 4;
  const POLL_MS = 10000;

  function updateCompareButton() {
    const button = document.getElementById("compare-button");
    const hint = document.getElementById("compare-hint");
    if (!button || !hint) return;
    const ticked = document.querySelectorAll("input[name=run][form=compare]:checked").length;
    button.disabled = ticked < 2 || ticked > MAX_COMPARED;
    hint.textContent = ticked + " ticked (2 to " + MAX_COMPARED + ")";
  }

  // Each run in progress carries data-live=<run key>; its state comes from state.json,
  // which reads the run's commit records.
  function pollLiveRuns() {
    const live = Array.from(document.querySelectorAll("[data-live]"));
    if (live.length === 0) return;
    const query = new URLSearchParams();
    live.forEach((cell) => query.append("run", cell.dataset.live));
    fetch("state.json?" + query.toString(), { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : {}))
      .then((states) => {
        live.forEach((cell) => {
          const state = states[cell.dataset.live];
          if (!state) return;
          const progress =
            state.stage + " (" + state.committed + " of " + state.stages + " stages)";
          if (state.complete) {
            cell.textContent = state.stage + " (reload for its metrics)";
            cell.removeAttribute("data-live");
            cell.className = "";
          } else if (state.airflow === "failed" || state.airflow === "success") {
            cell.textContent = "stopped at " + progress + ": Airflow run " + state.airflow;
            cell.removeAttribute("data-live");
            cell.className = "damaged";
          } else {
            cell.textContent = progress;
          }
        });
      })
      .catch(() => {})
      .finally(() => setTimeout(pollLiveRuns, POLL_MS));
  }

  // Inside the Airflow UI this page is an iframe sandboxed without top navigation, so a
  // link into the UI (data-airflow) cannot leave the frame: it moves the UI's own router
  // instead, as the UI's links do. Opened on its own, the page's links work as they are.
  function openInAirflow(event) {
    const link = event.target.closest("a[data-airflow]");
    if (!link || window.top === window) return;
    try {
      const url = new URL(link.getAttribute("href"), window.location.href);
      window.top.history.pushState(null, "", url.pathname + url.search);
      window.top.dispatchEvent(new PopStateEvent("popstate"));
      event.preventDefault();
    } catch (error) {
      // Not the UI's origin: leave the link to the browser.
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.addEventListener("click", openInAirflow);
    document.addEventListener("change", (event) => {
      if (event.target.matches("input[name=run]")) updateCompareButton();
    });
    updateCompareButton();
    setTimeout(pollLiveRuns, POLL_MS);
  });
})();
