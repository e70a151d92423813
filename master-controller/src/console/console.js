// The console's script: posts forms and buttons as JSON to the REST routes (under /console/api/auth,
// with the session's CSRF token), shows streamed progress as it arrives, puts an error next to the
// field it names, copies URLs, and reloads pages whose objects are changing.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// Posts `body` to REST route `api`; `onLine` gets each progress message. Throws Error(message).
async function post(api, body, onLine) {
  const r = await fetch("/console/api/auth/" + api, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body),
  });
  if (r.status === 401) { location.href = "/console/login"; throw new Error("Your session has ended"); }
  if (!r.ok) {
    const text = await r.text();
    let message = text;
    try { message = JSON.parse(text).message || text; } catch (_) {}
    throw new Error(message);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    rest += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = rest.split("\n");
    rest = done ? "" : lines.pop();
    for (const line of lines.filter((l) => l.trim())) {
      let v;
      try { v = JSON.parse(line); } catch (_) { continue; }
      if (v.result && v.result.message && v.result.code >= 400) throw new Error(v.result.message);
      const d = v.data || v;
      const m = d.message || (d.access && "The cloudlet's access key was issued") || "";
      if (m) onLine(m);
    }
    if (done) return;
  }
}

// The request body of a form: names are paths (key.name); data-type says number or JSON.
function bodyOf(form) {
  const obj = {};
  for (const el of form.querySelectorAll("[name]")) {
    if (el.value === "" && el.dataset.type) continue;
    let v = el.value;
    if (el.dataset.type === "number") v = Number(v);
    if (el.dataset.type === "json") v = JSON.parse(v);
    const path = el.name.split(".");
    let at = obj;
    for (const p of path.slice(0, -1)) at = at[p] = at[p] || {};
    at[path[path.length - 1]] = v;
  }
  return wrap(form.dataset, obj);
}

const wrap = (d, obj) => (d.kind ? { Region: d.region, [d.kind]: obj } : obj);

function progress(box) {
  box.hidden = false;
  box.textContent = "";
  return (m) => { box.textContent += m + "\n"; box.scrollTop = box.scrollHeight; };
}

// After a change the page reloads; what the operation said is shown again on the new page.
function done(what, box) {
  sessionStorage.setItem("edge-last", "Last operation: " + what + "\n" + box.textContent);
  location.reload();
}

const last = sessionStorage.getItem("edge-last");
if (last) {
  sessionStorage.removeItem("edge-last");
  const box = document.getElementById("progress");
  if (box) { box.hidden = false; box.textContent = last; }
}

// Shows `message` next to the first field whose hints it names, else above the form's fields.
function showError(form, message) {
  const lower = message.toLowerCase();
  const field = [...form.querySelectorAll(".field")].find((f) =>
    (f.dataset.hints || "").split(",").some((h) => h && lower.includes(h)));
  const at = field ? field.querySelector(".err") : form.querySelector(".form-error");
  if (field) field.classList.add("invalid");
  at.textContent = message;
  at.hidden = false;
}

function clearErrors(form) {
  form.querySelectorAll(".err, .form-error").forEach((e) => { e.hidden = true; e.textContent = ""; });
  form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target;
  if (!form.matches("form.api")) return;
  ev.preventDefault();
  clearErrors(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const box = form.querySelector(".progress");
    await post(form.dataset.api, bodyOf(form), progress(box));
    done(form.querySelector("h2").textContent, box);
  } catch (e) {
    showError(form, e.message);
  } finally {
    button.disabled = false;
  }
});

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  if (b.dataset.copy) {
    await navigator.clipboard.writeText(b.dataset.copy).catch(() => {});
    b.textContent = "Copied";
    return;
  }
  if (!b.dataset.api) return;
  if (!b.classList.contains("armed")) {
    b.classList.add("armed");
    b.textContent = "Confirm";
    return;
  }
  b.disabled = true;
  const box = document.getElementById("progress");
  const say = progress(box);
  try {
    await post(b.dataset.api, wrap(b.dataset, JSON.parse(b.dataset.body)), say);
    done(b.dataset.what, box);
  } catch (e) {
    say("Error: " + e.message);
    box.classList.add("failed");
    b.disabled = false;
  }
});

document.addEventListener("change", (ev) => {
  if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
});

const refresh = document.querySelector("[data-refresh]");
if (refresh) setTimeout(() => location.reload(), Number(refresh.dataset.refresh) * 1000);
