import { createContext, ReactNode, useCallback, useContext, useEffect, useRef, useState } from 'react';
import { api, ApiFailure, JobInfo, Permission, WebSession } from './api/client';
import { fmtDate, t } from './i18n';

export const SessionCtx = createContext<WebSession | null>(null);
export function useCan(): (p: Permission) => boolean {
  const s = useContext(SessionCtx);
  return (p) => !!s && s.permissions.includes(p);
}

/** Navigation inside the app (history API; the server answers index.html
 * for every path outside /api). */
export function navigate(path: string) {
  if (location.pathname + location.search === path) return;
  history.pushState(null, '', path);
  window.dispatchEvent(new PopStateEvent('popstate'));
}
export function usePath(): string {
  const [p, setP] = useState(location.pathname);
  useEffect(() => {
    const f = () => setP(location.pathname);
    window.addEventListener('popstate', f);
    return () => window.removeEventListener('popstate', f);
  }, []);
  return p;
}

export function errText(e: unknown): string {
  if (e instanceof ApiFailure) return e.message;
  return String(e);
}

/** Loads `path` (GET) and reloads it on demand or every `every` ms. */
export function useApi<T>(path: string | null, every?: number): { data: T | undefined; error: string | null; reload: () => void; loading: boolean } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [n, setN] = useState(0);
  const reload = useCallback(() => setN((x) => x + 1), []);
  useEffect(() => {
    if (!path) {
      setData(undefined);
      return;
    }
    let live = true;
    setLoading(true);
    api<T>('GET', path)
      .then((d) => {
        if (live) {
          setData(d);
          setError(null);
        }
      })
      .catch((e) => live && setError(errText(e)))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [path, n]);
  useEffect(() => {
    if (!every || !path) return;
    const h = setInterval(reload, every);
    return () => clearInterval(h);
  }, [every, path, reload]);
  return { data, error, reload, loading };
}

export function ErrorBox({ error }: { error: string | null | undefined }) {
  if (!error) return null;
  return (
    <p className="error" role="alert">
      {error}
    </p>
  );
}
export function Notice({ text }: { text: string | null }) {
  if (!text) return null;
  return (
    <p className="notice" role="status">
      {text}
    </p>
  );
}

/** A modal dialog (native <dialog>: focus trap, Escape closes). */
export function Dialog({ title, onClose, children }: { title: string; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    const close = () => onClose();
    d?.addEventListener('close', close);
    return () => d?.removeEventListener('close', close);
  }, [onClose]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" className="dialog">
      <div className="dialog-head">
        <h2 id="dialog-title">{title}</h2>
        <button type="button" className="ghost" aria-label={t('close')} onClick={() => ref.current?.close()}>
          ×
        </button>
      </div>
      {children}
    </dialog>
  );
}

/** Runs an async action, keeping its error and busy state. */
export function useAction(): { busy: boolean; error: string | null; run: (f: () => Promise<unknown>) => Promise<boolean>; setError: (e: string | null) => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = useCallback(async (f: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
      return true;
    } catch (e) {
      setError(errText(e));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, setError };
}

export function jobPercent(j: JobInfo): number {
  if (j.state !== 'running') return j.state === 'succeeded' || j.state === 'warnings' ? 100 : pct(j);
  return Math.min(99, pct(j));
}
function pct(j: JobInfo): number {
  const p = j.progress;
  if (p.bytes_total) return Math.floor((100 * p.bytes_done) / p.bytes_total);
  if (p.files_total) return Math.floor((100 * p.files_done) / p.files_total);
  return 0;
}

export function Progress({ job }: { job: JobInfo }) {
  const v = jobPercent(job);
  return (
    <span className="progress">
      <progress max={100} value={v} aria-label={t('progress_of', { id: job.id })} />
      <span className="pct" data-testid={`pct-${job.id}`}>
        {v} %
      </span>
    </span>
  );
}

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge state-${state}`}>{t(`state_${state}` as 'state_running')}</span>;
}

export function DateCell({ iso }: { iso: string | null | undefined }) {
  return <time dateTime={iso ?? undefined}>{fmtDate(iso)}</time>;
}

export function jobTarget(j: JobInfo): string {
  const s = j.spec as Record<string, unknown>;
  const parts: string[] = [];
  if (s.datastore) parts.push(String(s.datastore));
  if (Array.isArray(s.paths)) parts.push((s.paths as string[]).join(', '));
  if (s.vm) parts.push(`vm:${s.vm}`);
  if (s.snapshot) parts.push(String(s.snapshot).slice(0, 12));
  if (s.target) parts.push(`→ ${s.target}`);
  if (s.lab) parts.push(String(s.lab));
  return parts.join(' · ');
}

export function splitList(s: string): string[] {
  return s
    .split(/[\n,]/)
    .map((x) => x.trim())
    .filter(Boolean);
}
