import { FormEvent, useState } from 'react';
import { api, DatastoreInfo, enc, JobInfo, LabDefinition, LabReportInfo, LabRunInfo } from '../api/client';
import { DateCell, Dialog, ErrorBox, Notice, splitList, StateBadge, useAction, useApi, useCan } from '../common';
import { fmtDate, t } from '../i18n';
import { useJobs } from '../jobsfeed';
import { ConfirmDialog } from './Snapshots';

/** `report.json` of a lab report (crates/lab/src/report.rs; the file route
 * of the OpenAPI document has no schema for it). */
interface LabReportJson {
  lab: string;
  passed: boolean;
  started: string;
  ended: string;
  accelerator?: string;
  cancelled?: boolean;
  vms: {
    vm: string;
    snapshot: string;
    ip?: string | null;
    passed: boolean;
    started: string;
    ended: string;
    screenshot?: string | null;
    warnings?: string[];
    steps: { name: string; outcome: 'pass' | 'fail' | 'skip'; started: string; ended: string; detail?: string }[];
  }[];
}

export function Labs() {
  const labs = useApi<LabDefinition[]>('/api/labs');
  const runs = useApi<LabRunInfo[]>('/api/lab-runs', 10000);
  const stores = useApi<DatastoreInfo[]>('/api/datastores');
  const can = useCan();
  const [edit, setEdit] = useState<LabDefinition | 'new' | null>(null);
  const [del, setDel] = useState<LabDefinition | null>(null);
  const [msg, setMsg] = useState<string | null>(null);
  const [ds, setDs] = useState('');
  const store = ds || stores.data?.[0]?.name || '';
  const act = useAction();
  const { upsert } = useJobs();
  return (
    <>
      <h1>{t('nav_labs')}</h1>
      <section aria-labelledby="labs-h">
        <h2 id="labs-h">{t('lab_definitions')}</h2>
        {can('operate') && (
          <button type="button" className="primary" onClick={() => setEdit('new')}>
            {t('new_lab')}
          </button>
        )}
        <ErrorBox error={labs.error ?? act.error} />
        <Notice text={msg} />
        {labs.data && labs.data.length === 0 && <p className="muted">{t('no_labs')}</p>}
        {labs.data && labs.data.length > 0 && (
          <table>
            <thead>
              <tr>
                <th scope="col">{t('name')}</th>
                <th scope="col">{t('datastore')}</th>
                <th scope="col">{t('vms')}</th>
                <th scope="col">{t('probes')}</th>
                <th scope="col">{t('actions')}</th>
              </tr>
            </thead>
            <tbody>
              {labs.data.map((l) => (
                <tr key={l.name}>
                  <td>{l.name}</td>
                  <td>{l.datastore}</td>
                  <td className="wrap">{l.vms.map((v) => v.snapshot).join(', ')}</td>
                  <td>{l.probes ?? ''}</td>
                  <td className="actions">
                    {can('operate') && (
                      <>
                        <button
                          type="button"
                          disabled={act.busy}
                          onClick={() =>
                            act.run(async () => {
                              const j = await api<JobInfo>('POST', `/api/labs/${enc(l.name)}/run`);
                              upsert(j);
                              setMsg(t('started_job', { id: j.id }));
                              runs.reload();
                            })
                          }
                        >
                          {t('run_now')}
                        </button>
                        <button type="button" onClick={() => setEdit(l)}>
                          {t('edit')}
                        </button>
                        <button type="button" className="danger" onClick={() => setDel(l)}>
                          {t('delete')}
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="runs-h">
        <h2 id="runs-h">{t('lab_runs')}</h2>
        <ErrorBox error={runs.error} />
        {runs.data && runs.data.length === 0 && <p className="muted">{t('no_lab_runs')}</p>}
        {runs.data && runs.data.length > 0 && (
          <ul className="compact">
            {runs.data.map((r) => (
              <li key={r.id}>
                {r.lab ?? '—'} · {r.vms.join(', ')} · <DateCell iso={r.started} /> · {t('job')} <code>{r.job}</code>
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="rep-h">
        <h2 id="rep-h">{t('lab_reports')}</h2>
        <label className="inline">
          {t('datastore')}
          <select value={store} onChange={(e) => setDs(e.target.value)}>
            {(stores.data ?? []).map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        {store && <Reports ds={store} />}
      </section>
      {edit && (
        <LabDialog
          existing={edit === 'new' ? null : edit}
          stores={stores.data ?? []}
          onClose={() => setEdit(null)}
          onSaved={() => {
            setEdit(null);
            labs.reload();
          }}
        />
      )}
      {del && (
        <ConfirmDialog
          title={t('delete')}
          text={t('delete_lab_q', { name: del.name })}
          confirm={t('delete')}
          onClose={() => setDel(null)}
          action={async () => {
            await api('DELETE', `/api/labs/${enc(del.name)}`);
            labs.reload();
          }}
        />
      )}
    </>
  );
}

function Reports({ ds }: { ds: string }) {
  const reports = useApi<LabReportInfo[]>(`/api/datastores/${enc(ds)}/lab-reports`);
  const [open, setOpen] = useState<string | null>(null);
  return (
    <>
      <ErrorBox error={reports.error} />
      {reports.data && reports.data.length === 0 && <p className="muted">{t('no_reports')}</p>}
      {reports.data && reports.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('id')}</th>
              <th scope="col">{t('started')}</th>
              <th scope="col">{t('result')}</th>
              <th scope="col">{t('vms')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {reports.data.map((r) => (
              <tr key={r.id}>
                <td>
                  <code>{r.id}</code>
                </td>
                <td>
                  <DateCell iso={r.started} />
                </td>
                <td>
                  <StateBadge state={r.passed ? 'succeeded' : 'failed'} />
                </td>
                <td>{r.vms.map(([name, ok]) => `${name} ${ok ? '✔' : '✘'}`).join(', ')}</td>
                <td className="actions">
                  <button type="button" onClick={() => setOpen(open === r.id ? null : r.id)} aria-expanded={open === r.id}>
                    {t('details')}
                  </button>
                  <a href={`/api/datastores/${enc(ds)}/lab-reports/${enc(r.id)}/report.html`} target="_blank" rel="noopener">
                    {t('html_report')}
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && <ReportDetail ds={ds} id={open} />}
    </>
  );
}

function ReportDetail({ ds, id }: { ds: string; id: string }) {
  const base = `/api/datastores/${enc(ds)}/lab-reports/${enc(id)}`;
  const rep = useApi<LabReportJson>(`${base}/report.json`);
  return (
    <section className="panel" aria-label={t('report_of', { id })}>
      <ErrorBox error={rep.error} />
      {rep.data && (
        <>
          <p>
            {rep.data.lab} · {fmtDate(rep.data.started)} – {fmtDate(rep.data.ended)} {rep.data.accelerator && `· ${rep.data.accelerator}`}
          </p>
          {rep.data.vms.map((v) => (
            <div key={v.vm} className="vm-report">
              <h3>
                {v.vm} <StateBadge state={v.passed ? 'succeeded' : 'failed'} /> {v.ip && <code>{v.ip}</code>}
              </h3>
              <ol className="timeline">
                {v.steps.map((s, i) => (
                  <li key={i} className={`step-${s.outcome}`}>
                    <strong>{s.name}</strong> <span className={`badge outcome-${s.outcome}`}>{t(`outcome_${s.outcome}` as 'outcome_pass')}</span>{' '}
                    <span className="muted small">
                      {fmtDate(s.started)} · {((new Date(s.ended).getTime() - new Date(s.started).getTime()) / 1000).toFixed(1)} s
                    </span>
                    {s.detail && <div className="small">{s.detail}</div>}
                  </li>
                ))}
              </ol>
              {v.screenshot && <img className="screenshot" src={`${base}/${enc(v.screenshot)}`} alt={t('screenshot_of', { vm: v.vm })} />}
            </div>
          ))}
        </>
      )}
    </section>
  );
}

function LabDialog({ existing, stores, onClose, onSaved }: { existing: LabDefinition | null; stores: DatastoreInfo[]; onClose: () => void; onSaved: () => void }) {
  const [name, setName] = useState(existing?.name ?? '');
  const [ds, setDs] = useState(existing?.datastore ?? stores[0]?.name ?? '');
  const [vms, setVms] = useState((existing?.vms ?? []).map((v) => v.snapshot).join('\n'));
  const [probes, setProbes] = useState(existing?.probes ?? 'ping,heartbeat,screenshot');
  const [timeout, setTimeout_] = useState(existing?.boot_timeout ?? 180);
  const [after, setAfter] = useState(!!existing?.after_backup);
  const [notify, setNotify] = useState<string>(existing?.notify ?? 'failure');
  const act = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const old = new Map((existing?.vms ?? []).map((v) => [v.snapshot, v]));
    const body: LabDefinition = {
      ...(existing ?? {}),
      name: name.trim(),
      datastore: ds,
      vms: splitList(vms).map((s) => old.get(s) ?? { snapshot: s }),
      probes,
      boot_timeout: timeout,
      after_backup: after,
      notify: notify as LabDefinition['notify'],
    };
    act.run(async () => {
      if (existing) await api('PUT', `/api/labs/${enc(existing.name)}`, body);
      else await api('POST', '/api/labs', body);
      onSaved();
    });
  };
  return (
    <Dialog title={existing ? t('edit_lab') : t('new_lab')} onClose={onClose}>
      <form className="form" onSubmit={submit}>
        <label>
          {t('name')}
          <input value={name} onChange={(e) => setName(e.target.value)} required disabled={!!existing} />
        </label>
        <label>
          {t('datastore')}
          <select value={ds} onChange={(e) => setDs(e.target.value)}>
            {stores.map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        <label>
          {t('lab_vms_help')}
          <textarea rows={3} value={vms} onChange={(e) => setVms(e.target.value)} required placeholder="vm:web" />
        </label>
        <label>
          {t('probes')}
          <input value={probes} onChange={(e) => setProbes(e.target.value)} />
        </label>
        <label>
          {t('boot_timeout')}
          <input type="number" min={1} max={3600} value={timeout} onChange={(e) => setTimeout_(Number(e.target.value))} />
        </label>
        <label className="check">
          <input type="checkbox" checked={after} onChange={(e) => setAfter(e.target.checked)} /> {t('after_backup')}
        </label>
        <label>
          {t('notify')}
          <select value={notify} onChange={(e) => setNotify(e.target.value)}>
            <option value="never">{t('notify_never')}</option>
            <option value="failure">{t('notify_failure')}</option>
            <option value="always">{t('notify_always')}</option>
          </select>
        </label>
        <ErrorBox error={act.error} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('save')}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
