//! `/docs`: a page that renders `/openapi.json` with no script or style
//! from elsewhere, so it works on an air-gapped network.

/// The page; it fetches `/openapi.json`.
pub(crate) const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nordlys API</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 70rem; padding: 1rem 2rem; color: #1d232a; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #d6dde5; padding-bottom: 0.2rem; margin-top: 2rem; }
details { border: 1px solid #d6dde5; border-radius: 6px; margin: 0.4rem 0; }
summary { cursor: pointer; padding: 0.4rem 0.6rem; }
.body { padding: 0 0.8rem 0.6rem; }
.m { display: inline-block; min-width: 4.2rem; font-weight: 600; font-family: ui-monospace, monospace; }
.get { color: #1769aa; } .post { color: #2e7d32; } .delete { color: #b3261e; } .patch { color: #8a5a00; } .put { color: #6a1b9a; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f4f6f8; padding: 0.6rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; } td, th { text-align: left; padding: 0.15rem 0.6rem 0.15rem 0; vertical-align: top; }
.muted { color: #5b6670; }
</style>
</head>
<body>
<h1>Nordlys API</h1>
<p class="muted">JSON over HTTP. The machine-readable description: <a href="/openapi.json">openapi.json</a>, <a href="/openapi.yaml">openapi.yaml</a>.</p>
<div id="app">Loading openapi.json…</div>
<script>
"use strict";
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function refName(s) { return s && s.$ref ? s.$ref.split("/").pop() : null; }
function typeOf(s) {
  if (!s) return "";
  if (s.$ref) return refName(s);
  if (s.type === "array") return typeOf(s.items) + "[]";
  return (s.type || "any") + (s.format ? " (" + s.format + ")" : "");
}
function schemaBlock(doc, schema) {
  const name = refName(schema);
  const resolved = name ? doc.components.schemas[name] : schema;
  const box = el("div", {});
  if (name) box.append(el("p", {}, el("code", {}, name)));
  if (resolved && resolved.properties) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "description")));
    for (const [k, v] of Object.entries(resolved.properties)) {
      t.append(el("tr", {}, el("td", {}, el("code", {}, k)), el("td", {}, typeOf(v)), el("td", {}, v.description || "")));
    }
    box.append(t);
  } else if (resolved && resolved.enum) {
    box.append(el("p", {}, "One of: " + resolved.enum.join(", ")));
  }
  return box;
}
fetch("/openapi.json").then(r => r.json()).then(doc => {
  const app = document.getElementById("app");
  app.textContent = "";
  app.append(el("p", {}, doc.info.description || ""));
  const byTag = {};
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      (byTag[tag] = byTag[tag] || []).push([method, path, op]);
    }
  }
  for (const tag of doc.tags || []) {
    app.append(el("h2", {}, tag.name));
    if (tag.description) app.append(el("p", {}, tag.description));
    for (const [method, path, op] of byTag[tag.name] || []) {
      const body = el("div", { class: "body" }, el("pre", {}, op.description || ""));
      if (op.parameters) {
        const t = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")));
        for (const p of op.parameters) t.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, typeOf(p.schema)), el("td", {}, p.description || "")));
        body.append(el("h4", {}, "Parameters"), t);
      }
      if (op.requestBody) body.append(el("h4", {}, "Request body"), schemaBlock(doc, op.requestBody.content["application/json"].schema));
      const ok = op.responses["200"];
      const media = ok.content && Object.values(ok.content)[0];
      if (media) body.append(el("h4", {}, "Response"), schemaBlock(doc, media.schema));
      app.append(el("details", {}, el("summary", {}, el("span", { class: "m " + method }, method.toUpperCase()), el("code", {}, path), " ", el("span", { class: "muted" }, op.summary || "")), body));
    }
  }
}).catch(e => { document.getElementById("app").textContent = "Cannot load openapi.json: " + e; });
</script>
</body>
</html>
"##;
