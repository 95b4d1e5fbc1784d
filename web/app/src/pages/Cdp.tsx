import { FormEvent, useState } from 'react';
import { api, DatastoreInfo, enc, ExportInfo, JobInfo, S, VmInfo } from '../api/client';
import { DateCell, ErrorBox, navigate, Notice, useAction, useApi, useCan } from '../common';
import { fmtBytes, fmtDate, t } from '../i18n';
import { useJobs } from '../jobsfeed';

type CdpVmInfo = S['CdpVmInfo'];
type CdpBookmark = S['CdpBookmark'];

const ms = (iso: string | null | undefined) => (iso ? new Date(iso).getTime() : NaN);

/** Continuous data protection: the protected VMs of every datastore, their
 * sessions and bookmarks on a time axis, and the actions on them. */
export function Cdp() {
  const list = useApi<CdpVmInfo[]>('/api/cdp', 5000);
  const can = useCan();
  return (
    <>
      <h1>{t('nav_cdp')}</h1>
      {can('operate') && <ProtectForm onStarted={list.reload} />}
      <section aria-labelledby="cdp-h">
        <h2 id="cdp-h">{t('cdp_protected_vms')}</h2>
        <ErrorBox error={list.error} />
        {list.data && list.data.length === 0 && <p className="muted">{t('cdp_none')}</p>}
        {(list.data ?? []).map((v) => (
          <CdpVm key={`${v.datastore}/${v.vm}`} info={v} reload={list.reload} />
        ))}
      </section>
    </>
  );
}

function ProtectForm({ onStarted }: { onStarted: () => void }) {
  const vms = useApi<VmInfo[]>('/api/vms');
  const stores = useApi<DatastoreInfo[]>('/api/datastores');
  const [vm, setVm] = useState('');
  const [ds, setDs] = useState('');
  const [mode, setMode] = useState<'sync' | 'async'>('sync');
  const [every, setEvery] = useState('');
  const [consistent, setConsistent] = useState(false);
  const [msg, setMsg] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  const theVm = vm || vms.data?.[0]?.name || '';
  const theDs = ds || stores.data?.[0]?.name || '';
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setMsg(null);
    act.run(async () => {
      const bookmarks = every ? { every_seconds: Number(every), consistent } : {};
      const j = await api<JobInfo>('POST', '/api/jobs', { kind: 'cdp-protect', datastore: theDs, vm: theVm, mode, bookmarks });
      upsert(j);
      setMsg(t('started_job', { id: j.id }));
      onStarted();
    });
  };
  return (
    <section aria-labelledby="cdp-protect-h" className="panel">
      <h2 id="cdp-protect-h">{t('cdp_protect_vm')}</h2>
      {vms.data && vms.data.length === 0 ? (
        <p className="muted">{t('no_vms')}</p>
      ) : (
        <form className="inline-form" onSubmit={submit}>
          <label>
            {t('cdp_vm')}
            <select value={theVm} onChange={(e) => setVm(e.target.value)} required>
              {(vms.data ?? []).map((v) => (
                <option key={v.name}>{v.name}</option>
              ))}
            </select>
          </label>
          <label>
            {t('datastore')}
            <select value={theDs} onChange={(e) => setDs(e.target.value)} required>
              {(stores.data ?? []).map((d) => (
                <option key={d.name}>{d.name}</option>
              ))}
            </select>
          </label>
          <label>
            {t('cdp_mode')}
            <select value={mode} onChange={(e) => setMode(e.target.value as 'sync' | 'async')}>
              <option value="sync">{t('cdp_mode_sync')}</option>
              <option value="async">{t('cdp_mode_async')}</option>
            </select>
          </label>
          <label>
            {t('cdp_bookmark_every')}
            <input type="number" min={1} value={every} onChange={(e) => setEvery(e.target.value)} placeholder={t('cdp_bookmark_every_none')} />
          </label>
          <label>
            <input type="checkbox" checked={consistent} disabled={!every} onChange={(e) => setConsistent(e.target.checked)} />
            {t('cdp_consistent')}
          </label>
          <button type="submit" className="primary" disabled={act.busy || !theVm || !theDs}>
            {t('cdp_start')}
          </button>
        </form>
      )}
      <ErrorBox error={vms.error ?? act.error} />
      <Notice text={msg} />
    </section>
  );
}

function CdpVm({ info, reload }: { info: CdpVmInfo; reload: () => void }) {
  const can = useCan();
  const act = useAction();
  const base = `/api/datastores/${enc(info.datastore)}/cdp/${enc(info.vm)}`;
  const id = `cdp-${info.datastore}-${info.vm}`.replace(/[^A-Za-z0-9_-]/g, '_');
  return (
    <article className="card cdp-vm" aria-labelledby={`${id}-h`} data-testid={`cdp-vm-${info.vm}`}>
      <h3 id={`${id}-h`}>
        {info.vm} <span className="muted small">· {info.datastore}</span>{' '}
        {info.protecting ? (
          <span className="badge state-running" data-testid="cdp-state">
            {t('cdp_protecting')}
          </span>
        ) : (
          <span className="badge state-cancelled" data-testid="cdp-state">
            {t('cdp_stopped')}
          </span>
        )}
        {info.job && (
          <>
            {' '}
            <a
              href={`/jobs/${enc(info.job)}`}
              className="small"
              onClick={(e) => {
                e.preventDefault();
                navigate(`/jobs/${enc(info.job!)}`);
              }}
            >
              {t('job')} <code>{info.job}</code>
            </a>
          </>
        )}
      </h3>
      <table>
        <thead>
          <tr>
            <th scope="col">{t('cdp_disk')}</th>
            <th scope="col">{t('size')}</th>
            <th scope="col">{t('cdp_journal')}</th>
          </tr>
        </thead>
        <tbody>
          {info.disks.map((d) => (
            <tr key={d.disk}>
              <td>{d.disk}</td>
              <td>{fmtBytes(d.size)}</td>
              <td>
                <DateCell iso={d.first_write} /> – <DateCell iso={d.last_write} />
                {d.note && <div className="small error-text">{d.note}</div>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <TimeAxis info={info} />
      {can('operate') && (
        <>
          <div className="toolbar">
            {info.protecting && info.job && (
              <button
                type="button"
                className="danger"
                disabled={act.busy}
                onClick={() =>
                  act.run(async () => {
                    await api('POST', `/api/jobs/${enc(info.job!)}/cancel`);
                    reload();
                  })
                }
              >
                {t('cdp_stop')}
              </button>
            )}
          </div>
          <ErrorBox error={act.error} />
          <BookmarkForm base={base} id={id} onAdded={reload} />
          <ExportForm base={base} id={id} bookmarks={info.bookmarks} />
        </>
      )}
    </article>
  );
}

/** Sessions as bars over [first moment, now], bookmarks as markers. */
function TimeAxis({ info }: { info: CdpVmInfo }) {
  const now = Date.now();
  const sessions = info.disks.flatMap((d) =>
    d.sessions.map((s) => ({ disk: d.disk, mode: s.mode, from: ms(s.ready), to: s.ended ? ms(s.ended) : info.protecting ? now : ms(d.last_write) || ms(s.ready), open: !s.ended && info.protecting })),
  );
  const starts = [...sessions.map((s) => s.from), ...info.bookmarks.map((b) => ms(b.time))].filter((x) => isFinite(x));
  if (starts.length === 0) return <p className="muted">{t('cdp_no_sessions')}</p>;
  let lo = Math.min(...starts);
  let hi = Math.max(now, ...sessions.map((s) => s.to).filter((x) => isFinite(x)));
  const pad = Math.max((hi - lo) * 0.03, 1000);
  lo -= pad;
  hi += pad;
  const pos = (x: number) => `${(((x - lo) / (hi - lo)) * 100).toFixed(3)}%`;
  const width = (a: number, b: number) => `${Math.max(((b - a) / (hi - lo)) * 100, 0.5).toFixed(3)}%`;
  return (
    <figure className="cdp-axis" aria-label={t('cdp_time_axis', { vm: info.vm })} data-testid="cdp-axis">
      <div className="cdp-track">
        {sessions.map((s, i) => (
          <span
            key={i}
            className={`cdp-session${s.open ? ' open' : ''}`}
            style={{ left: pos(s.from), width: width(s.from, s.to) }}
            title={`${s.disk}${s.mode ? ` (${s.mode})` : ''}: ${fmtDate(new Date(s.from).toISOString())} – ${s.open ? t('cdp_now') : fmtDate(new Date(s.to).toISOString())}`}
            data-testid="cdp-session"
          />
        ))}
        {info.bookmarks.map((b) => (
          <span
            key={b.name}
            className={`cdp-bookmark${b.consistent ? ' consistent' : ''}`}
            style={{ left: pos(ms(b.time)) }}
            title={`${b.name} · ${fmtDate(b.time)} · ${b.kind}${b.consistent ? ' · ' + t('cdp_consistent') : ''}${b.detail ? ' · ' + b.detail : ''}`}
            data-testid="cdp-bookmark"
          >
            <span className="cdp-bookmark-label">{b.name}</span>
          </span>
        ))}
        <span className="cdp-now" style={{ left: pos(now) }} title={t('cdp_now')} />
      </div>
      <figcaption className="cdp-scale small muted">
        <span>{fmtDate(new Date(lo).toISOString())}</span>
        <span>
          {t('cdp_now')}: {fmtDate(new Date(now).toISOString())}
        </span>
      </figcaption>
    </figure>
  );
}

/** A datetime-local value (browser's zone, to the millisecond) as RFC 3339 UTC. */
function localToIso(v: string): string | null {
  const d = new Date(v);
  return isNaN(d.getTime()) ? null : d.toISOString();
}
function isoToLocal(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function BookmarkForm({ base, id, onAdded }: { base: string; id: string; onAdded: () => void }) {
  const [name, setName] = useState('');
  const [at, setAt] = useState('');
  const [msg, setMsg] = useState<string | null>(null);
  const act = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setMsg(null);
    act.run(async () => {
      const body: { name: string; at?: string } = { name: name.trim() };
      if (at) {
        const iso = localToIso(at);
        if (!iso) throw new Error(t('cdp_bad_time'));
        body.at = iso;
      }
      const b = await api<CdpBookmark>('POST', `${base}/bookmarks`, body);
      setMsg(t('cdp_bookmark_added', { name: b.name, time: fmtDate(b.time) }));
      setName('');
      setAt('');
      onAdded();
    });
  };
  return (
    <form className="inline-form" onSubmit={submit} aria-labelledby={`${id}-bm`}>
      <strong id={`${id}-bm`}>{t('cdp_add_bookmark')}</strong>
      <label>
        {t('cdp_bookmark_name')}
        <input value={name} onChange={(e) => setName(e.target.value)} required />
      </label>
      <label>
        {t('cdp_bookmark_time')}
        <input type="datetime-local" step="0.001" value={at} onChange={(e) => setAt(e.target.value)} />
      </label>
      <button type="submit" disabled={act.busy}>
        {t('cdp_add_bookmark')}
      </button>
      <ErrorBox error={act.error} />
      <Notice text={msg} />
    </form>
  );
}

function ExportForm({ base, id, bookmarks }: { base: string; id: string; bookmarks: CdpBookmark[] }) {
  const [by, setBy] = useState<'time' | 'bookmark'>(bookmarks.length ? 'bookmark' : 'time');
  const [at, setAt] = useState(() => isoToLocal(new Date()));
  const [bm, setBm] = useState('');
  const [out, setOut] = useState<ExportInfo[] | null>(null);
  const [copied, setCopied] = useState<string | null>(null);
  const act = useAction();
  const theBm = bm || bookmarks[bookmarks.length - 1]?.name || '';
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setOut(null);
    act.run(async () => {
      let moment: string;
      if (by === 'bookmark') moment = theBm;
      else {
        const iso = localToIso(at);
        if (!iso) throw new Error(t('cdp_bad_time'));
        moment = iso;
      }
      setOut(await api<ExportInfo[]>('POST', `${base}/exports`, { at: moment }));
    });
  };
  return (
    <form className="inline-form" onSubmit={submit} aria-labelledby={`${id}-ex`}>
      <strong id={`${id}-ex`}>{t('cdp_export_moment')}</strong>
      <label>
        {t('cdp_moment_by')}
        <select value={by} onChange={(e) => setBy(e.target.value as 'time' | 'bookmark')}>
          <option value="time">{t('cdp_by_time')}</option>
          <option value="bookmark" disabled={!bookmarks.length}>
            {t('cdp_by_bookmark')}
          </option>
        </select>
      </label>
      {by === 'time' ? (
        <label>
          {t('cdp_moment')}
          <input type="datetime-local" step="0.001" value={at} onChange={(e) => setAt(e.target.value)} required />
        </label>
      ) : (
        <label>
          {t('cdp_bookmark')}
          <select value={theBm} onChange={(e) => setBm(e.target.value)}>
            {bookmarks.map((b) => (
              <option key={b.name} value={b.name}>
                {b.name} · {fmtDate(b.time)}
              </option>
            ))}
          </select>
        </label>
      )}
      <button type="submit" disabled={act.busy}>
        {t('cdp_export')}
      </button>
      <ErrorBox error={act.error} />
      {out && (
        <ul className="compact" data-testid="cdp-exports">
          {out.map((x) => (
            <li key={x.id}>
              {x.disk}: <code data-testid="cdp-uri">{x.uri}</code>{' '}
              <button
                type="button"
                onClick={async () => {
                  try {
                    await navigator.clipboard.writeText(x.uri);
                    setCopied(x.id);
                  } catch {
                    /* no clipboard (plain http): the URI is shown */
                  }
                }}
              >
                {copied === x.id ? t('copied') : t('copy')}
              </button>
            </li>
          ))}
        </ul>
      )}
    </form>
  );
}
