// The job page's plots: four PNGs fetched with the token and shown through object URLs.

import { isAbort, request } from "../api.js";
import { el } from "../dom.js";

const PLOT_KINDS = [
  ["per-class", "Per-class accuracy vs training count"],
  ["curves", "Metric per epoch"],
  ["shots", "Many / medium / few-shot accuracy"],
  ["calibration", "Reliability diagram"],
];

export function renderPlotShell(ctx) {
  const section = ctx.sections.plots;
  if (section.firstChild) return;
  const grid = el("div", { class: "plots" });
  for (const [kind, title] of PLOT_KINDS) {
    grid.append(
      el(
        "figure",
        { id: `plot-${kind}`, dataset: { kind } },
        el("figcaption", {}, title),
        el("p", { class: "plot-missing" }, "Loading…"),
      ),
    );
  }
  section.append(el("h2", { id: "plots-title" }, "Plots"), grid);
}

async function loadPlot(ctx, kind, title) {
  const { v } = ctx;
  const figure = document.getElementById(`plot-${kind}`);
  if (!figure) return;
  const setBody = (node) => {
    const caption = figure.querySelector("figcaption");
    figure.replaceChildren(caption, node);
  };
  try {
    const response = await request(`${ctx.base}/plots/${kind}.png`, { signal: v.controller.signal, accept: "image/png" });
    const blob = await response.blob();
    if (v.stopped) return;
    const url = URL.createObjectURL(blob);
    v.urls.add(url);
    const img = el("img", { class: "plot", src: url, alt: `${title} (plot)`, dataset: { kind }, width: 900, height: 550 });
    img.addEventListener("load", () => {
      img.dataset.loaded = "true";
    });
    const old = figure.querySelector("img.plot");
    setBody(img);
    const caption = figure.querySelector("figcaption");
    caption.replaceChildren(title, el("a", { href: url, download: `${ctx.id}-${kind}.png` }, "download"));
    if (old && old.src && v.urls.has(old.src)) {
      URL.revokeObjectURL(old.src);
      v.urls.delete(old.src);
    }
  } catch (err) {
    if (isAbort(err) || v.stopped || err.status === 401) return;
    if (figure.querySelector("img.plot") && err.status !== 409) return; // keep the last good image
    const text = err.status === 409 ? "No finished trial yet." : `Could not load the plot: ${err.message}`;
    setBody(el("p", { class: "plot-missing", dataset: { kind, status: String(err.status) } }, text));
  }
}

export async function loadPlots(ctx) {
  const { state } = ctx;
  if (state.plotsBusy || ctx.v.stopped) return;
  state.plotsBusy = true;
  try {
    renderPlotShell(ctx);
    // The plots answer 409 until a trial reported an epoch: do not ask before (a 409 is a console error).
    const p = state.job && state.job.progress;
    if (p && p.epochs_reported === 0) {
      for (const [kind] of PLOT_KINDS) {
        const figure = document.getElementById(`plot-${kind}`);
        if (!figure || figure.querySelector("img.plot")) continue;
        figure.replaceChildren(
          figure.querySelector("figcaption"),
          el("p", { class: "plot-missing", dataset: { kind, status: "waiting" } }, "No epoch reported yet."),
        );
      }
      return;
    }
    await Promise.all(PLOT_KINDS.map(([kind, title]) => loadPlot(ctx, kind, title)));
  } finally {
    state.plotsBusy = false;
  }
}
