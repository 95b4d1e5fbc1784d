import { FormEvent, useEffect, useState } from 'react';
import { api, apiText, DatastoreInfo, enc, JobInfo } from '../api/client';
import { DateCell, Dialog, ErrorBox, jobTarget, navigate, Progress, splitList, StateBadge, useAction, useApi, useCan, usePath } from '../common';
import { fmtBytes, t } from '../i18n';
import { useJobs } from '../jobsfeed';
import { JobTable } from './Dashboard';

export function Jobs() {
  const path = usePath();
  const id = path.startsWith('/jobs/') ? decodeURIComponent(path.slice('/jobs/'.length)) : null;
  const { jobs, reload } = useJobs();
  const can = useCan();
  const [backup, setBackup] = useState(false);
  const [filter, setFilter] = useState('');
  if (id) return <JobDetail id={id} />;
  const shown = filter ? jobs.filter((j) => j.state === filter) : jobs;
  return (
    <>
      <h1>{t('nav_jobs')}</h1>
      <div className="toolbar">
        {can('operate') && (
          <button type="button" className="primary" onClick={() => setBackup(true)}>
            {t('backup_now')}
          </button>
        )}
        <label className="inline">
          {t('state')}
          <select value={filter} onChange={(e) => setFilter(e.target.value)}>
            <option value="">{t('all')}</option>
            {['running', 'succeeded', 'warnings', 'failed', 'cancelled', 'interrupted', 'skipped'].map((s) => (
              <option key={s} value={s}>
                {t(`state_${s}` as 'state_running')}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={reload}>
          {t('refresh')}
        </button>
      </div>
      {shown.length === 0 ? <p className="muted">{t('no_jobs')}</p> : <JobTable jobs={shown} />}
      {backup && <BackupDialog onClose={() => setBackup(false)} />}
    </>
  );
}

/** "Back up now": a `backup` job, then its live progress. */
export function BackupDialog({ onClose, datastore }: { onClose: () => void; datastore?: string }) {
  const ds = useApi<DatastoreInfo[]>('/api/datastores');
  const [store, setStore] = useState(datastore ?? '');
  const [paths, setPaths] = useState('');
  const [tags, setTags] = useState('');
  const [jobId, setJobId] = useState<string | null>(null);
  const act = useAction();
  const { jobs, upsert } = useJobs();
  useEffect(() => {
    if (!store && ds.data && ds.data.length) setStore(ds.data[0].name);
  }, [ds.data, store]);
  const job = jobs.find((j) => j.id === jobId);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    act.run(async () => {
      const j = await api<JobInfo>('POST', '/api/jobs', { kind: 'backup', datastore: store, paths: splitList(paths), tags: splitList(tags) });
      upsert(j);
      setJobId(j.id);
    });
  };
  return (
    <Dialog title={t('backup_now')} onClose={onClose}>
      {!jobId ? (
        <form onSubmit={submit} className="form">
          <label>
            {t('datastore')}
            <select value={store} onChange={(e) => setStore(e.target.value)} required name="datastore">
              {(ds.data ?? []).map((d) => (
                <option key={d.name}>{d.name}</option>
              ))}
            </select>
          </label>
          <label>
            {t('paths_one_per_line')}
            <textarea name="paths" rows={3} value={paths} onChange={(e) => setPaths(e.target.value)} required />
          </label>
          <label>
            {t('tags_comma')}
            <input name="tags" value={tags} onChange={(e) => setTags(e.target.value)} />
          </label>
          <ErrorBox error={act.error ?? ds.error} />
          <div className="buttons">
            <button type="submit" className="primary" disabled={act.busy}>
              {t('start_backup')}
            </button>
          </div>
        </form>
      ) : (
        <div className="job-progress" data-testid="backup-progress">
          <p>
            {t('job')} <code>{jobId}</code>
          </p>
          {job ? (
            <>
              <p>
                <StateBadge state={job.state} /> {job.state === 'running' ? job.progress.phase : ''}
              </p>
              <Progress job={job} />
              <p className="muted">
                {t('files_bytes', { files: job.progress.files_done, bytes: fmtBytes(job.progress.bytes_done) })}
              </p>
              {job.error && <p className="error">{job.error}</p>}
            </>
          ) : (
            <p className="muted">{t('loading')}</p>
          )}
          <div className="buttons">
            <button type="button" onClick={() => navigate(`/jobs/${jobId}`)}>
              {t('show_job')}
            </button>
            <button type="button" onClick={onClose}>
              {t('close')}
            </button>
          </div>
        </div>
      )}
    </Dialog>
  );
}

function JobDetail({ id }: { id: string }) {
  const { jobs } = useJobs();
  const fetched = useApi<JobInfo>(`/api/jobs/${enc(id)}`);
  const job = jobs.find((j) => j.id === id) ?? fetched.data;
  const [log, setLog] = useState<string>('');
  const can = useCan();
  const act = useAction();
  const running = job?.state === 'running';
  useEffect(() => {
    let live = true;
    const load = () =>
      apiText(`/api/jobs/${enc(id)}/log`)
        .then((l) => live && setLog(l))
        .catch(() => {});
    load();
    const h = running ? setInterval(load, 2000) : undefined;
    return () => {
      live = false;
      if (h) clearInterval(h);
    };
  }, [id, running]);
  return (
    <>
      <p>
        <a
          href="/jobs"
          onClick={(e) => {
            e.preventDefault();
            navigate('/jobs');
          }}
        >
          ← {t('nav_jobs')}
        </a>
      </p>
      <h1>
        {t('job')} {id}
      </h1>
      <ErrorBox error={fetched.error} />
      {job && (
        <>
          <dl className="props">
            <dt>{t('kind')}</dt>
            <dd>{job.spec.kind}</dd>
            <dt>{t('target')}</dt>
            <dd>{jobTarget(job)}</dd>
            <dt>{t('state')}</dt>
            <dd>
              <StateBadge state={job.state} /> {job.error_kind ?? ''}
            </dd>
            <dt>{t('progress')}</dt>
            <dd>
              <Progress job={job} /> {job.state === 'running' ? job.progress.phase : ''}
            </dd>
            <dt>{t('started')}</dt>
            <dd>
              <DateCell iso={job.started} />
            </dd>
            <dt>{t('finished')}</dt>
            <dd>
              <DateCell iso={job.finished} />
            </dd>
            {job.schedule && (
              <>
                <dt>{t('schedule')}</dt>
                <dd>{job.schedule}</dd>
              </>
            )}
            {job.error && (
              <>
                <dt>{t('error')}</dt>
                <dd className="error-text">{job.error}</dd>
              </>
            )}
          </dl>
          {running && can('operate') && (
            <button type="button" className="danger" disabled={act.busy} onClick={() => act.run(() => api('POST', `/api/jobs/${enc(id)}/cancel`))}>
              {t('cancel_job')}
            </button>
          )}
          <ErrorBox error={act.error} />
          {job.result && Object.keys(job.result).length > 0 && (
            <details>
              <summary>{t('result')}</summary>
              <pre>{JSON.stringify(job.result, null, 2)}</pre>
            </details>
          )}
          <details>
            <summary>{t('spec')}</summary>
            <pre>{JSON.stringify(job.spec, null, 2)}</pre>
          </details>
        </>
      )}
      <h2>{t('log')}</h2>
      <pre className="log" tabIndex={0} aria-label={t('log')}>
        {log || t('empty_log')}
      </pre>
    </>
  );
}
