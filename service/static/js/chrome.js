// Page chrome: the message box, the token form and the sign-out button.

import { getToken, setToken } from "./api.js";
import { $ } from "./dom.js";
import { stopView } from "./view.js";

let tokenWanted = false;
/** Whether the service wants a token (from /healthz); null while unknown. */
let authRequired = null;

export function isTokenWanted() {
  return tokenWanted;
}

export function setAuthRequired(value) {
  authRequired = value;
}

export function showMessage(text, kind = "error") {
  const box = $("message");
  if (!box) return;
  if (!text) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = text;
  box.className = kind === "info" ? "message info" : "message";
  box.hidden = false;
}

function updateAuthUi() {
  const has = Boolean(getToken());
  $("sign-out").hidden = !has;
  $("auth-state").hidden = !has;
}

function storeToken(token) {
  setToken(token);
  updateAuthUi();
}

/** Show the token form (no token yet, or the API rejected it); the current view stops polling. */
export function needToken(reason) {
  if (tokenWanted) return;
  tokenWanted = true;
  stopView(); // no more polling with a rejected token
  const had = Boolean(getToken());
  $("token-reason").textContent = had
    ? `The API rejected the token${reason ? ` (${reason})` : ""}. Enter another one.`
    : "This service needs an API token. It is kept in this browser tab only (sessionStorage).";
  $("token-panel").hidden = false;
  $("main").replaceChildren();
  showMessage("");
  const input = $("token-input");
  input.value = "";
  input.focus();
}

/** Wire the token form and the sign-out button; `route` shows the page the hash names. */
export function setupChrome(route) {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    storeToken(token);
    tokenWanted = false;
    $("token-panel").hidden = true;
    route();
  });
  $("sign-out").addEventListener("click", () => {
    storeToken("");
    tokenWanted = false;
    $("token-panel").hidden = true;
    if (authRequired === true) needToken(null);
    else route();
  });
  updateAuthUi();
}
