// Hash routing: "#/" is the jobs list, "#/jobs/<id>" one job.

import { isTokenWanted, showMessage } from "./chrome.js";
import { $ } from "./dom.js";
import { jobPage } from "./job/page.js";
import { jobsPage } from "./jobs-list.js";

export function route() {
  if (isTokenWanted()) return;
  showMessage("");
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/jobs\/([^/?#]+)\/?$/);
  const main = $("main");
  if (m) {
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch {
      id = m[1];
    }
    jobPage(main, id);
  } else {
    jobsPage(main);
  }
}
