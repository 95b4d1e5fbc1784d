import { FormEvent, useEffect, useState } from 'react';
import { api, DatastoreInfo, enc, ForgetPreview, JobInfo, KeepRules, SnapshotDirListing, SnapshotInfo, VmFilesListing } from '../api/client';
import { DateCell, Dialog, ErrorBox, navigate, Notice, Progress, splitList, StateBadge, useAction, useApi, useCan } from '../common';
import { fmtBytes, fmtDate, t } from '../i18n';
import { useJobs } from '../jobsfeed';
import { KeepFields } from './Schedules';

function useDatastoreParam(list: DatastoreInfo[] | undefined): [string, (s: string) => void] {
  const q = new URLSearchParams(location.search).get('ds') ?? '';
  const [ds, setDs] = useState(q);
  useEffect(() => {
    if (!ds && list && list.length) setDs(list[0].name);
  }, [list, ds]);
  return [
    ds,
    (s) => {
      setDs(s);
      history.replaceState(null, '', `/snapshots?ds=${enc(s)}`);
    },
  ];
}

export function Snapshots() {
  const stores = useApi<DatastoreInfo[]>('/api/datastores');
  const [ds, setDs] = useDatastoreParam(stores.data);
  const snaps = useApi<SnapshotInfo[]>(ds ? `/api/datastores/${enc(ds)}/snapshots` : null);
  const [open, setOpen] = useState<SnapshotInfo | null>(null);
  const [forget, setForget] = useState(false);
  const [del, setDel] = useState<SnapshotInfo | null>(null);
  const [maint, setMaint] = useState<'verify' | 'gc' | null>(null);
  const can = useCan();
  const store = stores.data?.find((d) => d.name === ds);
  const list = [...(snaps.data ?? [])].sort((a, b) => (a.time < b.time ? 1 : -1));

  return (
    <>
      <h1>{t('nav_snapshots')}</h1>
      <div className="toolbar">
        <label className="inline">
          {t('datastore')}
          <select
            value={ds}
            onChange={(e) => {
              setDs(e.target.value);
              setOpen(null);
            }}
            data-testid="ds-select"
          >
            {(stores.data ?? []).map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        <button type="button" onClick={snaps.reload}>
          {t('refresh')}
        </button>
        {can('operate') && ds && !store?.append_only && (
          <button type="button" onClick={() => setForget(true)}>
            {t('forget_by_rules')}
          </button>
        )}
        {can('operate') && ds && (
          <button type="button" onClick={() => setMaint('verify')}>
            {t('verify_datastore')}
          </button>
        )}
        {can('operate') && ds && !store?.append_only && (
          <button type="button" onClick={() => setMaint('gc')}>
            {t('gc_datastore')}
          </button>
        )}
      </div>
      {maint && ds && <MaintenanceDialog ds={ds} kind={maint} onClose={() => setMaint(null)} />}
      <ErrorBox error={stores.error ?? snaps.error} />
      {stores.data && stores.data.length === 0 && <p className="muted">{t('no_datastores')}</p>}
      {snaps.data && list.length === 0 && <p className="muted">{t('no_snapshots')}</p>}
      {list.length > 0 && (
        <table data-testid="snapshots">
          <thead>
            <tr>
              <th scope="col">{t('time')}</th>
              <th scope="col">{t('kind')}</th>
              <th scope="col">{t('host')}</th>
              <th scope="col">{t('paths')}</th>
              <th scope="col">{t('size')}</th>
              <th scope="col">{t('tags')}</th>
              <th scope="col">{t('id')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {list.map((s) => (
              <tr key={s.id} className={open?.id === s.id ? 'selected' : undefined}>
                <td>
                  <DateCell iso={s.time} />
                </td>
                <td>
                  {s.kind === 'vm' ? t('kind_vm') : t('kind_files')}
                  {s.damaged && <span className="badge state-failed">{t('damaged')}</span>}
                </td>
                <td>{s.hostname}</td>
                <td className="wrap">{s.paths.join(', ')}</td>
                <td>
                  {fmtBytes(s.bytes)} <span className="muted small">({t('n_files', { n: s.files })})</span>
                </td>
                <td>{s.tags.map((x) => <span key={x} className="tag">{x}</span>)}</td>
                <td>
                  <code>{s.id.slice(0, 12)}</code>
                </td>
                <td className="actions">
                  <button type="button" onClick={() => setOpen(s)}>
                    {t('open')}
                  </button>
                  {can('operate') && !store?.append_only && (
                    <button type="button" className="danger" onClick={() => setDel(s)}>
                      {t('delete')}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && ds && (open.kind === 'vm' ? <VmSnapshot ds={ds} snap={open} onClose={() => setOpen(null)} /> : <FileSnapshot ds={ds} snap={open} onClose={() => setOpen(null)} />)}
      {forget && ds && <ForgetDialog ds={ds} onClose={() => setForget(false)} onDone={snaps.reload} />}
      {del && ds && (
        <ConfirmDialog
          title={t('delete_snapshot')}
          text={t('delete_snapshot_q', { id: del.id.slice(0, 12), time: fmtDate(del.time) })}
          confirm={t('delete')}
          onClose={() => setDel(null)}
          action={async () => {
            await api('DELETE', `/api/datastores/${enc(ds)}/snapshots/${enc(del.id)}`);
            if (open?.id === del.id) setOpen(null);
            snaps.reload();
          }}
        />
      )}
    </>
  );
}

export function ConfirmDialog({ title, text, confirm, onClose, action }: { title: string; text: string; confirm: string; onClose: () => void; action: () => Promise<unknown> }) {
  const act = useAction();
  return (
    <Dialog title={title} onClose={onClose}>
      <p>{text}</p>
      <ErrorBox error={act.error} />
      <div className="buttons">
        <button type="button" className="danger" disabled={act.busy} onClick={async () => (await act.run(action)) && onClose()}>
          {confirm}
        </button>
        <button type="button" onClick={onClose}>
          {t('cancel')}
        </button>
      </div>
    </Dialog>
  );
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

function FileSnapshot({ ds, snap, onClose }: { ds: string; snap: SnapshotInfo; onClose: () => void }) {
  const [dir, setDir] = useState('/');
  const base = `/api/datastores/${enc(ds)}/snapshots/${enc(snap.id)}`;
  const tree = useApi<SnapshotDirListing>(`${base}/tree?path=${enc(dir)}`);
  const [selected, setSelected] = useState<string[]>([]);
  const [restore, setRestore] = useState<string[] | null>(null);
  const can = useCan();
  useEffect(() => setDir('/'), [snap.id]);
  const crumbs = dir.split('/').filter(Boolean);
  const toggle = (p: string) => setSelected((cur) => (cur.includes(p) ? cur.filter((x) => x !== p) : [...cur, p]));
  return (
    <section className="panel" aria-labelledby="snap-title" data-testid="snapshot-browser">
      <div className="panel-head">
        <h2 id="snap-title">
          {t('snapshot_of', { time: fmtDate(snap.time) })} <code>{snap.id.slice(0, 12)}</code>
        </h2>
        <button type="button" className="ghost" onClick={onClose} aria-label={t('close')}>
          ×
        </button>
      </div>
      <div className="toolbar">
        {can('operate') && (
          <>
            <button type="button" className="primary" onClick={() => setRestore([])}>
              {t('restore_snapshot')}
            </button>
            <button type="button" disabled={selected.length === 0} onClick={() => setRestore(selected)}>
              {t('restore_selected', { n: selected.length })}
            </button>
          </>
        )}
      </div>
      <nav aria-label={t('breadcrumb')} className="crumbs">
        <ol>
          <li>
            <button type="button" className="link" onClick={() => setDir('/')}>
              {t('root')}
            </button>
          </li>
          {crumbs.map((c, i) => (
            <li key={i}>
              <button type="button" className="link" onClick={() => setDir('/' + crumbs.slice(0, i + 1).join('/'))} aria-current={i === crumbs.length - 1 ? 'location' : undefined}>
                {c}
              </button>
            </li>
          ))}
        </ol>
      </nav>
      <ErrorBox error={tree.error} />
      {tree.data && (
        <table data-testid="tree">
          <thead>
            <tr>
              {can('operate') && <th scope="col">{t('select')}</th>}
              <th scope="col">{t('name')}</th>
              <th scope="col">{t('size')}</th>
              <th scope="col">{t('mode')}</th>
              <th scope="col">{t('modified')}</th>
            </tr>
          </thead>
          <tbody>
            {tree.data.entries.length === 0 && (
              <tr>
                <td colSpan={5} className="muted">
                  {t('empty_dir')}
                </td>
              </tr>
            )}
            {tree.data.entries.map((e) => {
              const p = joinPath(tree.data!.path, e.name);
              return (
                <tr key={e.name}>
                  {can('operate') && (
                    <td>
                      <input type="checkbox" checked={selected.includes(p)} onChange={() => toggle(p)} aria-label={t('select_name', { name: e.name })} />
                    </td>
                  )}
                  <td>
                    {e.kind === 'dir' ? (
                      <button type="button" className="link" onClick={() => setDir(p)}>
                        📁 {e.name}/
                      </button>
                    ) : e.kind === 'file' ? (
                      <a href={`${base}/download?path=${enc(p)}`} download={e.name} title={t('download')}>
                        {e.name}
                      </a>
                    ) : (
                      <span>
                        {e.name}
                        {e.target ? ` → ${e.target}` : ''}
                      </span>
                    )}
                  </td>
                  <td>{e.kind === 'file' ? fmtBytes(e.size) : ''}</td>
                  <td>
                    <code>{e.mode.toString(8).padStart(4, '0')}</code>
                  </td>
                  <td>
                    <DateCell iso={e.mtime} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {restore && <RestoreDialog ds={ds} snap={snap} include={restore} onClose={() => setRestore(null)} />}
    </section>
  );
}

function JobWatch({ id }: { id: string }) {
  const { jobs } = useJobs();
  const j = jobs.find((x) => x.id === id);
  return (
    <div className="job-progress" data-testid="job-watch">
      <p>
        {t('job')}{' '}
        <a
          href={`/jobs/${id}`}
          onClick={(e) => {
            e.preventDefault();
            navigate(`/jobs/${id}`);
          }}
        >
          {id}
        </a>
      </p>
      {j && (
        <p>
          <StateBadge state={j.state} /> <Progress job={j} />
          {j.error && <span className="error-text"> {j.error}</span>}
        </p>
      )}
    </div>
  );
}

function RestoreDialog({ ds, snap, include, onClose }: { ds: string; snap: SnapshotInfo; include: string[]; onClose: () => void }) {
  const [target, setTarget] = useState('');
  const [inc, setInc] = useState(include.join('\n'));
  const [job, setJob] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    act.run(async () => {
      const paths = splitList(inc);
      const j = await api<JobInfo>('POST', `/api/datastores/${enc(ds)}/snapshots/${enc(snap.id)}/restore`, { target: target.trim(), ...(paths.length ? { include: paths } : {}) });
      upsert(j);
      setJob(j.id);
    });
  };
  return (
    <Dialog title={t('restore_snapshot')} onClose={onClose}>
      {job ? (
        <>
          <JobWatch id={job} />
          <div className="buttons">
            <button type="button" onClick={onClose}>
              {t('close')}
            </button>
          </div>
        </>
      ) : (
        <form className="form" onSubmit={submit}>
          <label>
            {t('restore_target')}
            <input name="target" value={target} onChange={(e) => setTarget(e.target.value)} required placeholder="/srv/restore" />
          </label>
          <label>
            {t('include_paths')}
            <textarea name="include" rows={3} value={inc} onChange={(e) => setInc(e.target.value)} />
          </label>
          <ErrorBox error={act.error} />
          <div className="buttons">
            <button type="submit" className="primary" disabled={act.busy}>
              {t('start_restore')}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

function VmSnapshot({ ds, snap, onClose }: { ds: string; snap: SnapshotInfo; onClose: () => void }) {
  const can = useCan();
  const [dlg, setDlg] = useState<'restore' | 'instant' | null>(null);
  const [browse, setBrowse] = useState(false);
  return (
    <section className="panel" aria-labelledby="snap-title">
      <div className="panel-head">
        <h2 id="snap-title">
          {t('snapshot_of', { time: fmtDate(snap.time) })} {snap.paths.join(', ')} <code>{snap.id.slice(0, 12)}</code>
        </h2>
        <button type="button" className="ghost" onClick={onClose} aria-label={t('close')}>
          ×
        </button>
      </div>
      <div className="toolbar">
        {can('operate') && (
          <>
            <button type="button" className="primary" onClick={() => setDlg('restore')}>
              {t('vm_restore')}
            </button>
            <button type="button" onClick={() => setDlg('instant')}>
              {t('instant_restore')}
            </button>
          </>
        )}
        <button type="button" onClick={() => setBrowse(!browse)} aria-expanded={browse}>
          {t('browse_files')}
        </button>
      </div>
      {browse && <VmFiles ds={ds} snap={snap} />}
      {dlg && <VmJobDialog ds={ds} snapshot={snap.id} mode={dlg} onClose={() => setDlg(null)} />}
    </section>
  );
}

export function VmJobDialog({ ds, snapshot, mode, onClose }: { ds: string; snapshot: string; mode: 'restore' | 'instant'; onClose: () => void }) {
  const [target, setTarget] = useState('');
  const [format, setFormat] = useState('');
  const [platform, setPlatform] = useState('');
  const [name, setName] = useState('');
  const [net, setNet] = useState('none');
  const [paused, setPaused] = useState(false);
  const [job, setJob] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    act.run(async () => {
      const spec =
        mode === 'restore'
          ? { kind: 'vm-restore', datastore: ds, snapshot, target: target.trim(), ...(format ? { format } : {}), ...(platform ? { platform } : {}) }
          : { kind: 'vm-instant-restore', datastore: ds, snapshot, net, paused, ...(name ? { name } : {}), ...(platform ? { platform } : {}) };
      const j = await api<JobInfo>('POST', '/api/jobs', spec);
      upsert(j);
      setJob(j.id);
    });
  };
  return (
    <Dialog title={mode === 'restore' ? t('vm_restore') : t('instant_restore')} onClose={onClose}>
      {job ? (
        <JobWatch id={job} />
      ) : (
        <form className="form" onSubmit={submit}>
          {mode === 'restore' ? (
            <>
              <label>
                {t('restore_target')}
                <input value={target} onChange={(e) => setTarget(e.target.value)} required />
              </label>
              <label>
                {t('format')}
                <select value={format} onChange={(e) => setFormat(e.target.value)}>
                  <option value="">{t('default')}</option>
                  {['raw', 'qcow2', 'vmdk', 'vhdx'].map((f) => (
                    <option key={f}>{f}</option>
                  ))}
                </select>
              </label>
            </>
          ) : (
            <>
              <label>
                {t('vm_name_optional')}
                <input value={name} onChange={(e) => setName(e.target.value)} />
              </label>
              <label>
                {t('network')}
                <input value={net} onChange={(e) => setNet(e.target.value)} />
              </label>
              <label className="check">
                <input type="checkbox" checked={paused} onChange={(e) => setPaused(e.target.checked)} /> {t('start_paused')}
              </label>
            </>
          )}
          <label>
            {t('platform')}
            <select value={platform} onChange={(e) => setPlatform(e.target.value)}>
              <option value="">{t('same_platform')}</option>
              {['kvm', 'openstack', 'vmware', 'hyperv'].map((f) => (
                <option key={f}>{f}</option>
              ))}
            </select>
          </label>
          <ErrorBox error={act.error} />
          <div className="buttons">
            <button type="submit" className="primary" disabled={act.busy}>
              {t('start')}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

function VmFiles({ ds, snap }: { ds: string; snap: SnapshotInfo }) {
  const [partition, setPartition] = useState<string | null>(null);
  const [path, setPath] = useState('/');
  const base = `/api/datastores/${enc(ds)}/snapshots/${enc(snap.id)}/vm-files`;
  const parts = useApi<VmFilesListing>(base);
  const listing = useApi<VmFilesListing>(partition !== null ? `${base}?partition=${enc(partition)}&path=${enc(path)}` : null);
  return (
    <div>
      <ErrorBox error={parts.error ?? listing.error} />
      {parts.loading && <p className="muted">{t('loading')}</p>}
      {parts.data?.partitions && (
        <label className="inline">
          {t('partition')}
          <select value={partition ?? ''} onChange={(e) => { setPartition(e.target.value || null); setPath('/'); }}>
            <option value="">—</option>
            {parts.data.partitions.map((p) => (
              <option key={p.name} value={p.name} disabled={!!p.unsupported}>
                {p.name} {p.fstype ?? ''} {p.label ?? ''} {fmtBytes(p.size)}
              </option>
            ))}
          </select>
        </label>
      )}
      {listing.data && (
        <>
          <p>
            <code>{path}</code>{' '}
            {path !== '/' && (
              <button type="button" className="link" onClick={() => setPath(path.replace(/\/[^/]*\/?$/, '') || '/')}>
                {t('up')}
              </button>
            )}
          </p>
          <table>
            <thead>
              <tr>
                <th scope="col">{t('name')}</th>
                <th scope="col">{t('size')}</th>
                <th scope="col">{t('modified')}</th>
              </tr>
            </thead>
            <tbody>
              {(listing.data.entries ?? []).map((e) => {
                const isDir = (e.mode & 0o170000) === 0o040000;
                const p = joinPath(path, e.name);
                return (
                  <tr key={e.name}>
                    <td>
                      {isDir ? (
                        <button type="button" className="link" onClick={() => setPath(p)}>
                          📁 {e.name}/
                        </button>
                      ) : (
                        <a href={`${base}/download?partition=${enc(partition ?? '')}&path=${enc(p)}`} download={e.name}>
                          {e.name}
                        </a>
                      )}
                    </td>
                    <td>{isDir ? '' : fmtBytes(e.size)}</td>
                    <td>{fmtDate(e.mtime)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}

function ForgetDialog({ ds, onClose, onDone }: { ds: string; onClose: () => void; onDone: () => void }) {
  const [keep, setKeep] = useState<KeepRules>({ last: 3, daily: 7 });
  const [preview, setPreview] = useState<ForgetPreview | null>(null);
  const [job, setJob] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  return (
    <Dialog title={t('forget_by_rules')} onClose={onClose}>
      {job ? (
        <>
          <JobWatch id={job} />
          <Notice text={t('forget_started')} />
        </>
      ) : (
        <form
          className="form"
          onSubmit={(e) => {
            e.preventDefault();
            act.run(async () => setPreview(await api<ForgetPreview>('POST', `/api/datastores/${enc(ds)}/forget-preview`, keep)));
          }}
        >
          <KeepFields keep={keep} onChange={(k) => { setKeep(k); setPreview(null); }} />
          <ErrorBox error={act.error} />
          <div className="buttons">
            <button type="submit" disabled={act.busy}>
              {t('preview')}
            </button>
          </div>
          {preview && (
            <div data-testid="forget-preview">
              <p>{t('preview_counts', { keep: preview.keep.length, remove: preview.remove.length })}</p>
              {preview.remove.length > 0 && (
                <ul className="compact">
                  {preview.remove.map((s) => (
                    <li key={s.id}>
                      {fmtDate(s.time)} · {s.hostname} · {s.paths.join(', ')} · <code>{s.id.slice(0, 12)}</code>
                    </li>
                  ))}
                </ul>
              )}
              <button
                type="button"
                className="danger"
                disabled={act.busy || preview.remove.length === 0}
                onClick={() =>
                  act.run(async () => {
                    const j = await api<JobInfo>('POST', '/api/jobs', { kind: 'forget', datastore: ds, keep });
                    upsert(j);
                    setJob(j.id);
                    onDone();
                  })
                }
              >
                {t('confirm_forget', { n: preview.remove.length })}
              </button>
            </div>
          )}
        </form>
      )}
    </Dialog>
  );
}

/** Check (`verify`, optionally reading all data) or reclaim space (`gc`). */
function MaintenanceDialog({ ds, kind, onClose }: { ds: string; kind: 'verify' | 'gc'; onClose: () => void }) {
  const [readData, setReadData] = useState(false);
  const [job, setJob] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  return (
    <Dialog title={kind === 'verify' ? t('verify_datastore') : t('gc_datastore')} onClose={onClose}>
      {job ? (
        <JobWatch id={job} />
      ) : (
        <form
          className="form"
          onSubmit={(e) => {
            e.preventDefault();
            act.run(async () => {
              const j = await api<JobInfo>('POST', '/api/jobs', kind === 'verify' ? { kind, datastore: ds, read_data: readData } : { kind, datastore: ds });
              upsert(j);
              setJob(j.id);
            });
          }}
        >
          <p>{kind === 'verify' ? t('verify_help', { ds }) : t('gc_help', { ds })}</p>
          {kind === 'verify' && (
            <label className="check">
              <input type="checkbox" checked={readData} onChange={(e) => setReadData(e.target.checked)} /> {t('read_data')}
            </label>
          )}
          <ErrorBox error={act.error} />
          <div className="buttons">
            <button type="submit" className="primary" disabled={act.busy}>
              {t('start')}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
