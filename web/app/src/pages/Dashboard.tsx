import { useMemo } from 'react';
import { HealthReport, HealthSample, JobInfo } from '../api/client';
import { ChartBox } from '../chart';
import { DateCell, ErrorBox, jobTarget, navigate, Progress, StateBadge, useApi } from '../common';
import { fmtBytes, fmtDuration, fmtTime, t } from '../i18n';
import { useJobs } from '../jobsfeed';

const FAILED = new Set(['failed', 'interrupted', 'cancelled']);

export function Dashboard() {
  const health = useApi<HealthReport>('/api/health/details', 10000);
  const history = useApi<HealthSample[]>('/api/health/history', 60000);
  const { jobs, live } = useJobs();
  const running = jobs.filter((j) => j.state === 'running');
  const finished = jobs.filter((j) => j.state !== 'running');
  const last = [...finished.filter((j) => FAILED.has(j.state)), ...finished.filter((j) => !FAILED.has(j.state))].slice(0, 10);
  const h = health.data;

  const usage = useMemo(() => {
    const samples = history.data ?? [];
    const names = Array.from(new Set(samples.flatMap((s) => s.datastores.map((d) => d.name))));
    return {
      labels: samples.map((s) => fmtTime(new Date(s.time))),
      datasets: names.map((n) => ({ label: n, data: samples.map((s) => { const d = s.datastores.find((x) => x.name === n); return d ? d.used_bytes / 2 ** 30 : null; }) })),
    };
  }, [history.data]);
  const durations = useMemo(() => {
    const done = finished.filter((j) => j.finished).slice(0, 20).reverse();
    return {
      labels: done.map((j) => `${j.spec.kind} ${fmtTime(new Date(j.started))}`),
      datasets: [{ label: t('duration_s'), data: done.map((j) => (new Date(j.finished!).getTime() - new Date(j.started).getTime()) / 1000) }],
    };
  }, [finished]);

  return (
    <>
      <h1>{t('nav_dashboard')}</h1>
      <ErrorBox error={health.error} />
      {h && (
        <section className="cards" aria-label={t('health')}>
          <div className="card">
            <h2>{t('memory')}</h2>
            <p className="big">{fmtBytes(h.memory.available_bytes)}</p>
            <p className="muted">{t('available_of', { total: fmtBytes(h.memory.total_bytes) })}</p>
          </div>
          <div className="card">
            <h2>{t('load')}</h2>
            <p className="big">{h.load.one.toFixed(2)}</p>
            <p className="muted">
              {h.load.five.toFixed(2)} · {h.load.fifteen.toFixed(2)}
            </p>
          </div>
          <div className="card">
            <h2>{t('uptime')}</h2>
            <p className="big">{fmtDuration(h.uptime_secs)}</p>
            <p className="muted">{t('daemon_memory', { rss: fmtBytes(h.daemon_rss_bytes) })}</p>
          </div>
          {h.datastores.map((d) => (
            <div className="card" key={d.name}>
              <h2>{t('datastore_named', { name: d.name })}</h2>
              <p className="big">{d.error ? '—' : t('free', { free: fmtBytes(d.available_bytes) })}</p>
              <progress max={100} value={d.used_percent} aria-label={t('used_percent_of', { name: d.name })} />
              <p className="muted">{d.error ?? t('used_percent', { pct: d.used_percent.toFixed(1), total: fmtBytes(d.total_bytes) })}</p>
            </div>
          ))}
        </section>
      )}
      {h && h.disks.length > 0 && (
        <section>
          <h2>{t('disk_io')}</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">{t('device')}</th>
                <th scope="col">{t('read_per_s')}</th>
                <th scope="col">{t('write_per_s')}</th>
                <th scope="col">{t('busy')}</th>
              </tr>
            </thead>
            <tbody>
              {h.disks.map((d) => (
                <tr key={d.device}>
                  <td>{d.device}</td>
                  <td>{fmtBytes(d.read_bytes_per_sec)}/s</td>
                  <td>{fmtBytes(d.write_bytes_per_sec)}/s</td>
                  <td>{d.busy_percent.toFixed(0)} %</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      <section>
        <h2>
          {t('running_jobs')} <span className="muted small">{live ? t('live') : t('polling')}</span>
        </h2>
        {running.length === 0 ? <p className="muted">{t('no_running_jobs')}</p> : <JobTable jobs={running} />}
      </section>
      <section>
        <h2>{t('last_results')}</h2>
        {last.length === 0 ? <p className="muted">{t('no_jobs')}</p> : <JobTable jobs={last} />}
      </section>
      <section className="charts">
        <div>
          <h2>{t('usage_over_time')}</h2>
          <ErrorBox error={history.error} />
          <ChartBox type="line" labels={usage.labels} datasets={usage.datasets} label={t('usage_over_time')} yTitle="GiB" />
        </div>
        <div>
          <h2>{t('job_durations')}</h2>
          <ChartBox type="bar" labels={durations.labels} datasets={durations.datasets} label={t('job_durations')} yTitle="s" />
        </div>
      </section>
    </>
  );
}

export function JobTable({ jobs }: { jobs: JobInfo[] }) {
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">{t('job')}</th>
          <th scope="col">{t('kind')}</th>
          <th scope="col">{t('target')}</th>
          <th scope="col">{t('started')}</th>
          <th scope="col">{t('state')}</th>
          <th scope="col">{t('progress')}</th>
        </tr>
      </thead>
      <tbody>
        {jobs.map((j) => (
          <tr key={j.id} data-job={j.id}>
            <td className="nowrap">
              <a
                href={`/jobs/${j.id}`}
                onClick={(e) => {
                  e.preventDefault();
                  navigate(`/jobs/${j.id}`);
                }}
              >
                {j.id}
              </a>
            </td>
            <td>{j.spec.kind}</td>
            <td className="wrap">{jobTarget(j)}</td>
            <td>
              <DateCell iso={j.started} />
            </td>
            <td>
              <StateBadge state={j.state} />
              {j.error && <div className="small error-text">{j.error}</div>}
            </td>
            <td>
              <Progress job={j} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
