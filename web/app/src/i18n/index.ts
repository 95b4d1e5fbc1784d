import { useSyncExternalStore } from 'react';
import { en } from './en';
import { zh } from './zh';

export type Lang = 'en' | 'zh-CN';
export type Key = keyof typeof en;
const dicts: Record<Lang, Record<Key, string>> = { en, 'zh-CN': zh };
const STORAGE = 'lifeboat.lang';

function initial(): Lang {
  try {
    const saved = localStorage.getItem(STORAGE);
    if (saved === 'en' || saved === 'zh-CN') return saved;
  } catch {
    /* storage blocked */
  }
  return (navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}

let lang: Lang = initial();
const listeners = new Set<() => void>();
document.documentElement.lang = lang;

export function setLang(l: Lang) {
  lang = l;
  try {
    localStorage.setItem(STORAGE, l);
  } catch {
    /* ignore */
  }
  document.documentElement.lang = l;
  listeners.forEach((f) => f());
}
export function getLang(): Lang {
  return lang;
}
export function useLang(): Lang {
  return useSyncExternalStore(
    (f) => {
      listeners.add(f);
      return () => listeners.delete(f);
    },
    () => lang,
  );
}

/** The string `key` in the current language, `{name}` replaced by vars. */
export function t(key: Key, vars?: Record<string, string | number>): string {
  let s = dicts[lang][key] ?? en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

export function fmtDate(iso: string | null | undefined | number): string {
  if (iso === null || iso === undefined || iso === '') return '—';
  const d = typeof iso === 'number' ? new Date(iso * 1000) : new Date(iso);
  if (isNaN(d.getTime())) return String(iso);
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'medium' }).format(d);
}
export function fmtTime(d: Date): string {
  return new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit' }).format(d);
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(secs: number): string {
  if (!isFinite(secs) || secs < 0) return '—';
  if (secs < 60) return `${secs.toFixed(secs < 10 ? 1 : 0)} s`;
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m} min ${Math.round(secs % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}
