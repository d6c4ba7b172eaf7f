// The current view's resources: an AbortController for its requests, timers and object URLs, freed on leaving.

let view = null;

/** Stop the current view and start a new one: {controller, timers, urls, stopped}. */
export function newView() {
  stopView();
  view = { controller: new AbortController(), timers: new Set(), urls: new Set(), stopped: false };
  return view;
}

export function stopView() {
  if (!view) return;
  view.stopped = true;
  view.controller.abort();
  for (const t of view.timers) clearTimeout(t);
  for (const u of view.urls) URL.revokeObjectURL(u);
  view = null;
}

/** Run fn after ms unless the view `v` was stopped by then. */
export function later(v, ms, fn) {
  if (v.stopped) return;
  const t = setTimeout(() => {
    v.timers.delete(t);
    if (!v.stopped) fn();
  }, ms);
  v.timers.add(t);
}
