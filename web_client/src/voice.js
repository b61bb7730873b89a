// Elderly mode (large text, high contrast, big buttons) and spoken prompts through the
// browser's own speech synthesis (no network: voices are the system's).
import { lang, t } from "./i18n.js";

const listeners = new Set();
let elderly = readInitial();

function readInitial() {
  const query = new URLSearchParams(location.search).get("elderly");
  if (query !== null) return query === "1" || query === "true";
  try {
    return localStorage.getItem("tc.elderly") === "1";
  } catch {
    return false;
  }
}

export function isElderly() {
  return elderly;
}

export function setElderly(on) {
  elderly = Boolean(on);
  document.body.classList.toggle("elderly", elderly);
  try {
    localStorage.setItem("tc.elderly", elderly ? "1" : "0");
  } catch {
    /* private mode */
  }
  for (const fn of listeners) fn(elderly);
}

export function onElderlyChange(fn) {
  listeners.add(fn);
}

export function applyElderly() {
  document.body.classList.toggle("elderly", elderly);
}

/** Speak plain text in the current language (always, e.g. rehab cues). */
export function say(text, { interrupt = true, language } = {}) {
  const synth = window.speechSynthesis;
  if (!synth || !text) return false;
  const target = language || lang();
  const utterance = new SpeechSynthesisUtterance(text);
  utterance.lang = target;
  utterance.rate = elderly ? 0.85 : 1.0;
  const voice = synth.getVoices().find((v) => v.lang && v.lang.toLowerCase().startsWith(target.slice(0, 2).toLowerCase()));
  if (voice) utterance.voice = voice;
  if (interrupt) synth.cancel();
  synth.speak(utterance);
  window.__tcLastSpoken = { text, lang: target };
  return true;
}

/** A step prompt: spoken only in elderly mode. */
export function prompt(key, vars) {
  if (!elderly) return false;
  return say(t(key, vars));
}
