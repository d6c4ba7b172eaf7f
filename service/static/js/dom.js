// DOM helpers. Text from the API goes in through el() as text nodes, never parsed as HTML.

import { parseTime } from "./format.js";

export const $ = (id) => document.getElementById(id);

/** Create an element; string/number children become text nodes (never parsed as HTML). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function badge(status) {
  const s = String(status || "unknown");
  return el("span", { class: `badge status-${s.replace(/[^a-z_-]/gi, "")}` }, s);
}

export function timeEl(t, text) {
  const d = parseTime(t);
  return el("time", { datetime: d ? d.toISOString() : null, title: d ? d.toLocaleString() : null }, text);
}

/** A table header row: each column a string (its title) or [title, attrs]. */
export function headRow(columns) {
  return el(
    "thead",
    {},
    el(
      "tr",
      {},
      columns
        .filter(Boolean)
        .map((c) => (Array.isArray(c) ? el("th", { scope: "col", ...c[1] }, c[0], c[2]) : el("th", { scope: "col" }, c))),
    ),
  );
}
