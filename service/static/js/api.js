// API access: the token (sessionStorage), fetch with the auth header, JSON errors, and reading an SSE stream.

const TOKEN_KEY = "longtail.apiToken";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage unavailable (private mode): the token just is not kept */
  }
}

/** Called with the API's message when a request gets a 401 (the page shows the token form). */
let onUnauthorized = () => {};

export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function authHeaders(extra) {
  const headers = { ...(extra || {}) };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || "error"}`;
  let details = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      details = body.error.details ?? null;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, code, message, details);
}

/** fetch with the auth header; a 401 shows the token form. Resolves to the Response (ok) or throws ApiError. */
export async function request(path, { signal, accept = "application/json" } = {}) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders({ Accept: accept }), signal, cache: "no-store" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "Cannot reach the service (network error).", null);
  }
  if (response.ok) return response;
  const error = await errorFrom(response);
  if (response.status === 401) onUnauthorized(error.message);
  throw error;
}

export async function getJson(path, opts) {
  const response = await request(path, opts);
  return response.json();
}

export function isAbort(err) {
  return Boolean(err && err.name === "AbortError");
}

/** The public /healthz's `auth` (whether the service wants a token), or null when it does not say. */
export async function healthAuth() {
  try {
    const response = await fetch("/healthz", { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = response.ok ? await response.json() : null;
    return body && typeof body.auth === "boolean" ? body.auth : null;
  } catch {
    return null;
  }
}

/**
 * One server-sent event block ("event: epoch\ndata: {...}") -> {type, data}, or null without JSON data.
 * Written by hand: EventSource cannot send the Authorization header, so the stream is read over fetch.
 */
export function parseEvent(raw) {
  let type = "message";
  const dataLines = [];
  for (const line of raw.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") dataLines.push(value);
  }
  if (!dataLines.length) return null;
  try {
    return { type, data: JSON.parse(dataLines.join("\n")) };
  } catch {
    return null; // not JSON: ignored
  }
}

/**
 * Read an SSE response to its end, calling onEvent(type, data) per event; `stopped()` true cancels the read.
 * Throws before onOpen() where the browser cannot stream a response body.
 */
export async function readEvents(response, { onOpen, onEvent, stopped }) {
  if (!response.body || typeof response.body.getReader !== "function") throw new Error("streaming not supported");
  onOpen();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const dispatch = (raw) => {
    const event = parseEvent(raw);
    if (event) onEvent(event.type, event.data);
  };
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (stopped()) {
      reader.cancel().catch(() => {});
      return;
    }
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const raw = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      dispatch(raw);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) dispatch(buffer.replace(/\r\n?/g, "\n"));
}
