// The page talks to the same server's JSON API. Everything that comes from the model or the user is put on
// the page with textContent or as an attribute value, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function say(message) {
  $("status").textContent = message;
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail || response.statusText}`);
  }
  return body;
}

// What the server can do (from /healthz); the page shows and asks for nothing else.
const can = { search: false, embed: false, caption: false };

async function health() {
  try {
    const h = await call("/healthz");
    Object.assign(can, { search: h.search, embed: h.embed, caption: h.caption });
    const parts = [h.embed && "search and zero-shot", h.caption && "captions"].filter(Boolean).join(", ");
    $("about").textContent = `${h.model}: ${parts || "nothing"}; ${h.indexed} images indexed.`;
    $("search").hidden = !can.search;
    $("labels-box").hidden = !can.embed;
    $("caption-box").hidden = !can.caption;
    $("describe").hidden = !(can.embed || can.caption);
  } catch (e) {
    say(`server unreachable: ${e.message}`);
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  say("");
  const grid = $("results");
  grid.replaceChildren();
  try {
    const params = new URLSearchParams({ q, k: $("k").value || "12" });
    const { results } = await call(`/search?${params}`);
    for (const hit of results) {
      const figure = document.createElement("figure");
      figure.className = "hit";
      const img = document.createElement("img");
      img.src = hit.url;
      img.alt = hit.path;
      const caption = document.createElement("figcaption");
      caption.textContent = `${hit.score.toFixed(3)} ${hit.path}`;
      figure.append(img, caption);
      grid.append(figure);
    }
    if (!results.length) say("no results");
  } catch (e) {
    say(e.message);
  }
});

async function describe(file) {
  say("");
  $("caption").textContent = "";
  $("zero-shot").replaceChildren();
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  const labels = $("labels").value.trim();
  const jobs = [];
  if (can.embed && labels) {
    const form = new FormData();
    form.append("image", file);
    form.append("labels", labels);
    jobs.push(call("/zero-shot", { method: "POST", body: form }).then(({ labels: ranked }) => {
      for (const { label, probability } of ranked) {
        const row = document.createElement("tr");
        row.className = "label";
        const name = document.createElement("td");
        name.textContent = label;
        const p = document.createElement("td");
        p.textContent = `${(100 * probability).toFixed(1)} %`;
        row.append(name, p);
        $("zero-shot").append(row);
      }
    }));
  }
  if (can.caption) {
    const form = new FormData();
    form.append("image", file);
    jobs.push(call("/caption", { method: "POST", body: form }).then(({ caption }) => {
      $("caption").textContent = caption;
    }));
  }
  const failures = (await Promise.allSettled(jobs)).filter((r) => r.status === "rejected");
  if (failures.length) say(failures.map((f) => f.reason.message).join("; "));
}

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => $("file").files[0] && describe($("file").files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) describe(e.dataTransfer.files[0]);
});

health();
