// A tiny DOM toolkit: h() builds elements, tx() makes a translated text node that follows
// language switches (relabel() rewrites every one of them in place, so live views such as the
// video grid are never rebuilt just to change language).
import { t } from "./i18n.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "i18n") {
      setI18n(el, value);
    } else if (key === "i18nAttr") {
      // {"aria-label": "mute"} -> translated attributes
      el.dataset.i18nAttr = JSON.stringify(value);
      for (const [attr, k] of Object.entries(value)) el.setAttribute(attr, t(k));
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A span whose text is t(key, vars) and follows language changes. */
export function tx(key, vars) {
  const span = document.createElement("span");
  setI18n(span, [key, vars]);
  return span;
}

/** Make el's text the translation of key (optionally [key, vars]). */
export function setI18n(el, spec) {
  const [key, vars] = Array.isArray(spec) ? spec : [spec, undefined];
  el.dataset.i18n = key;
  if (vars) el.dataset.i18nVars = JSON.stringify(vars);
  else delete el.dataset.i18nVars;
  el.textContent = t(key, vars || {});
}

export function relabel(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) {
    const vars = el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : {};
    el.textContent = t(el.dataset.i18n, vars);
  }
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const [attr, k] of Object.entries(JSON.parse(el.dataset.i18nAttr))) {
      el.setAttribute(attr, t(k));
    }
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function button(labelKey, onClick, attrs = {}) {
  return h("button", { type: "button", onclick: onClick, ...attrs }, tx(labelKey));
}

export function formatMinutes(seconds) {
  return Math.max(1, Math.round(seconds / 60));
}

export function timeOfDay(ts) {
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
