// Every user-visible string, in English and Simplified Chinese. t(key, vars) picks the current
// language; missing keys fall back to English, then to the key itself.

import en from "./strings/en.js";
import zhCN from "./strings/zh-CN.js";

const STRINGS = { en, "zh-CN": zhCN };

const listeners = new Set();
let current = pickInitial();

function pickInitial() {
  const saved = safeGet("tc.lang");
  if (saved && STRINGS[saved]) return saved;
  const nav = (navigator.language || "en").toLowerCase();
  return nav.startsWith("zh") ? "zh-CN" : "en";
}

function safeGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

export function lang() {
  return current;
}

export function setLang(next) {
  if (!STRINGS[next] || next === current) return;
  current = next;
  try {
    localStorage.setItem("tc.lang", next);
  } catch {
    /* private mode: keep it for this page only */
  }
  document.documentElement.lang = next;
  for (const fn of listeners) fn(next);
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function t(key, vars = {}) {
  const table = STRINGS[current] || STRINGS.en;
  let text = table[key] ?? STRINGS.en[key] ?? key;
  for (const [name, value] of Object.entries(vars)) {
    // a value {key} is itself translated (e.g. {device: {key: "device_camera"}})
    const shown = value && typeof value === "object" && value.key ? t(value.key) : value;
    text = text.replaceAll(`{${name}}`, String(shown));
  }
  return text;
}

export function hasKey(key) {
  return key in STRINGS.en;
}
