// Long-tail service web UI: native ES modules (ES2020), no build step, no external resources.
// This entry module wires the page; the views live in ./js/ (api, format, dom, chrome, router, jobs-list, job/*).
// All text from the API is inserted with textContent (through el()), never as HTML.

import { getToken, healthAuth, isAbort, setUnauthorizedHandler } from "./js/api.js";
import { needToken, setAuthRequired, setupChrome } from "./js/chrome.js";
import { $ } from "./js/dom.js";
import { route } from "./js/router.js";

/**
 * Without a stored token, ask the public /healthz first: a service that says `"auth": true` there gets the token
 * form straight away, without a 401 from the API (which the browser would log as a console error). A service
 * that does not say (older ones) is simply tried: a 401 shows the form then.
 */
async function firstRoute() {
  if (!getToken()) {
    const auth = await healthAuth();
    setAuthRequired(auth);
    if (auth === true) {
      needToken(null);
      return;
    }
  }
  route();
}

function start() {
  setUnauthorizedHandler(needToken);
  setupChrome(route);
  window.addEventListener("hashchange", () => {
    route();
    const main = $("main");
    if (main) main.focus({ preventScroll: true });
  });
  window.addEventListener("unhandledrejection", (event) => {
    // Every request is guarded; this only keeps an unexpected rejection from reaching the console unexplained.
    if (isAbort(event.reason)) event.preventDefault();
  });
  firstRoute();
}

// A module script runs after the document is parsed (it is deferred), so the elements are there.
start();
