import { FormEvent, useState } from 'react';
import { api, DatastoreInfo, enc, JobInfo, JobSpec, KeepRules, ScheduleInfo, ScheduleSpec } from '../api/client';
import { DateCell, Dialog, ErrorBox, navigate, Notice, splitList, useAction, useApi, useCan } from '../common';
import { t } from '../i18n';
import { useJobs } from '../jobsfeed';
import { ConfirmDialog } from './Snapshots';

const RULES: (keyof KeepRules)[] = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];

export function KeepFields({ keep, onChange }: { keep: KeepRules; onChange: (k: KeepRules) => void }) {
  return (
    <fieldset className="keep">
      <legend>{t('keep_rules')}</legend>
      {RULES.map((r) => (
        <label key={r}>
          {t(`keep_${r}` as 'keep_last')}
          <input
            type="number"
            min={0}
            name={`keep-${r}`}
            value={keep[r] ?? ''}
            onChange={(e) => {
              const v = e.target.value === '' ? undefined : Math.max(0, parseInt(e.target.value, 10) || 0);
              const k = { ...keep };
              if (v === undefined) delete k[r];
              else k[r] = v;
              onChange(k);
            }}
          />
        </label>
      ))}
    </fieldset>
  );
}

function describeSpec(j: JobSpec): string {
  const s = j as Record<string, unknown>;
  const bits = [String(s.kind)];
  if (s.datastore) bits.push(String(s.datastore));
  if (Array.isArray(s.paths)) bits.push((s.paths as string[]).join(', '));
  if (s.vm) bits.push(`vm:${s.vm}`);
  if (s.lab) bits.push(String(s.lab));
  return bits.join(' · ');
}

export function Schedules() {
  const list = useApi<ScheduleInfo[]>('/api/schedules');
  const can = useCan();
  const [edit, setEdit] = useState<ScheduleInfo | 'new' | null>(null);
  const [del, setDel] = useState<ScheduleInfo | null>(null);
  const [msg, setMsg] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  return (
    <>
      <h1>{t('nav_schedules')}</h1>
      <div className="toolbar">
        {can('operate') && (
          <button type="button" className="primary" onClick={() => setEdit('new')}>
            {t('new_schedule')}
          </button>
        )}
        <button type="button" onClick={list.reload}>
          {t('refresh')}
        </button>
      </div>
      <ErrorBox error={list.error ?? act.error} />
      <Notice text={msg} />
      {list.data && list.data.length === 0 && <p className="muted">{t('no_schedules')}</p>}
      {list.data && list.data.length > 0 && (
        <table data-testid="schedules">
          <thead>
            <tr>
              <th scope="col">{t('name')}</th>
              <th scope="col">{t('cron')}</th>
              <th scope="col">{t('job')}</th>
              <th scope="col">{t('next_run')}</th>
              <th scope="col">{t('last_job')}</th>
              <th scope="col">{t('enabled')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((s) => (
              <tr key={s.id}>
                <td>{s.name}</td>
                <td>
                  <code>{s.cron}</code>
                </td>
                <td className="wrap">{describeSpec(s.job)}</td>
                <td>
                  <DateCell iso={s.next_run} />
                </td>
                <td>
                  {s.last_job ? (
                    <a
                      href={`/jobs/${s.last_job}`}
                      onClick={(e) => {
                        e.preventDefault();
                        navigate(`/jobs/${s.last_job}`);
                      }}
                    >
                      {s.last_job}
                    </a>
                  ) : (
                    '—'
                  )}
                </td>
                <td>{s.enabled === false ? t('no') : t('yes')}</td>
                <td className="actions">
                  {can('operate') && (
                    <>
                      <button
                        type="button"
                        disabled={act.busy}
                        onClick={() =>
                          act.run(async () => {
                            const j = await api<JobInfo>('POST', `/api/schedules/${enc(s.id)}/run`);
                            upsert(j);
                            setMsg(t('started_job', { id: j.id }));
                          })
                        }
                      >
                        {t('run_now')}
                      </button>
                      <button type="button" onClick={() => setEdit(s)}>
                        {t('edit')}
                      </button>
                      <button type="button" className="danger" onClick={() => setDel(s)}>
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
      {edit && (
        <ScheduleDialog
          existing={edit === 'new' ? null : edit}
          onClose={() => setEdit(null)}
          onSaved={() => {
            setEdit(null);
            list.reload();
          }}
        />
      )}
      {del && (
        <ConfirmDialog
          title={t('delete_schedule')}
          text={t('delete_schedule_q', { name: del.name })}
          confirm={t('delete')}
          onClose={() => setDel(null)}
          action={async () => {
            await api('DELETE', `/api/schedules/${enc(del.id)}`);
            list.reload();
          }}
        />
      )}
    </>
  );
}

const KINDS = ['backup', 'vm-backup', 'verify', 'gc', 'forget', 'lab-verify'];

function ScheduleDialog({ existing, onClose, onSaved }: { existing: ScheduleInfo | null; onClose: () => void; onSaved: () => void }) {
  const stores = useApi<DatastoreInfo[]>('/api/datastores');
  const spec = (existing?.job ?? { kind: 'backup' }) as Record<string, unknown>;
  const [name, setName] = useState(existing?.name ?? '');
  const [cron, setCron] = useState(existing?.cron ?? '0 30 2 * * *');
  const [enabled, setEnabled] = useState(existing?.enabled !== false);
  const [notify, setNotify] = useState<string>(existing?.notify ?? 'failure');
  const [kind, setKind] = useState(String(spec.kind));
  const [ds, setDs] = useState(String(spec.datastore ?? ''));
  const [paths, setPaths] = useState(Array.isArray(spec.paths) ? (spec.paths as string[]).join('\n') : '');
  const [tags, setTags] = useState(Array.isArray(spec.tags) ? (spec.tags as string[]).join(', ') : '');
  const [vm, setVm] = useState(String(spec.vm ?? ''));
  const [lab, setLab] = useState(String(spec.lab ?? ''));
  const [readData, setReadData] = useState(!!spec.read_data);
  const [keep, setKeep] = useState<KeepRules>(existing?.keep ?? {});
  const [jobKeep, setJobKeep] = useState<KeepRules>((spec.keep as KeepRules) ?? { last: 7 });
  const act = useAction();
  const store = ds || stores.data?.[0]?.name || '';
  const submit = (e: FormEvent) => {
    e.preventDefault();
    let job: Record<string, unknown>;
    switch (kind) {
      case 'backup':
        job = { kind, datastore: store, paths: splitList(paths), tags: splitList(tags) };
        break;
      case 'vm-backup':
        job = { kind, datastore: store, vm: vm.trim(), tags: splitList(tags) };
        break;
      case 'verify':
        job = { kind, datastore: store, read_data: readData };
        break;
      case 'forget':
        job = { kind, datastore: store, keep: jobKeep };
        break;
      case 'lab-verify':
        job = { kind, datastore: store, lab: lab.trim() };
        break;
      default:
        job = { kind, datastore: store };
    }
    const body: ScheduleSpec = { name: name.trim(), cron: cron.trim(), enabled, notify: notify as ScheduleSpec['notify'], job: job as JobSpec };
    if (Object.keys(keep).length && (kind === 'backup' || kind === 'vm-backup')) body.keep = keep;
    act.run(async () => {
      if (existing) await api('PUT', `/api/schedules/${enc(existing.id)}`, body);
      else await api('POST', '/api/schedules', body);
      onSaved();
    });
  };
  return (
    <Dialog title={existing ? t('edit_schedule') : t('new_schedule')} onClose={onClose}>
      <form className="form" onSubmit={submit}>
        <label>
          {t('name')}
          <input name="name" value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z0-9_\-]{1,64}" />
        </label>
        <label>
          {t('cron')} <span className="muted small">{t('cron_help')}</span>
          <input name="cron" value={cron} onChange={(e) => setCron(e.target.value)} required />
        </label>
        <label>
          {t('kind')}
          <select name="kind" value={kind} onChange={(e) => setKind(e.target.value)}>
            {KINDS.map((k) => (
              <option key={k}>{k}</option>
            ))}
          </select>
        </label>
        <label>
          {t('datastore')}
          <select name="datastore" value={store} onChange={(e) => setDs(e.target.value)}>
            {(stores.data ?? []).map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        {kind === 'backup' && (
          <label>
            {t('paths_one_per_line')}
            <textarea name="paths" rows={3} value={paths} onChange={(e) => setPaths(e.target.value)} required />
          </label>
        )}
        {kind === 'vm-backup' && (
          <label>
            {t('vm')}
            <input name="vm" value={vm} onChange={(e) => setVm(e.target.value)} required />
          </label>
        )}
        {(kind === 'backup' || kind === 'vm-backup') && (
          <label>
            {t('tags_comma')}
            <input name="tags" value={tags} onChange={(e) => setTags(e.target.value)} />
          </label>
        )}
        {kind === 'verify' && (
          <label className="check">
            <input type="checkbox" checked={readData} onChange={(e) => setReadData(e.target.checked)} /> {t('read_data')}
          </label>
        )}
        {kind === 'lab-verify' && (
          <label>
            {t('lab')}
            <input name="lab" value={lab} onChange={(e) => setLab(e.target.value)} required />
          </label>
        )}
        {kind === 'forget' && <KeepFields keep={jobKeep} onChange={setJobKeep} />}
        {(kind === 'backup' || kind === 'vm-backup') && <KeepFields keep={keep} onChange={setKeep} />}
        <label>
          {t('notify')}
          <select name="notify" value={notify} onChange={(e) => setNotify(e.target.value)}>
            <option value="never">{t('notify_never')}</option>
            <option value="failure">{t('notify_failure')}</option>
            <option value="always">{t('notify_always')}</option>
          </select>
        </label>
        <label className="check">
          <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} /> {t('enabled')}
        </label>
        <ErrorBox error={act.error} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('save')}
          </button>
          <button type="button" onClick={onClose}>
            {t('cancel')}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
