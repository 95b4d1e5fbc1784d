import { createContext, useCallback, useContext, useEffect, useRef, useState } from 'react';
import { api, ApiEvent, JobInfo } from './api/client';

export interface JobsFeed {
  jobs: JobInfo[];
  live: boolean;
  reload: () => void;
  /** Puts a job just started by the page into the list at once. */
  upsert: (j: JobInfo) => void;
}
export const JobsCtx = createContext<JobsFeed>({ jobs: [], live: false, reload: () => {}, upsert: () => {} });
export const useJobs = () => useContext(JobsCtx);

function sortJobs(list: JobInfo[]): JobInfo[] {
  return [...list].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/** The jobs, kept current by the event stream (`/api/events`, SSE) and,
 * while the stream is down or a job runs, by polling `/api/jobs`. */
export function useJobsFeed(enabled: boolean): JobsFeed {
  const [jobs, setJobs] = useState<JobInfo[]>([]);
  const [live, setLive] = useState(false);
  const jobsRef = useRef<JobInfo[]>([]);
  jobsRef.current = jobs;

  const upsert = useCallback((j: JobInfo) => {
    setJobs((cur) => sortJobs([j, ...cur.filter((x) => x.id !== j.id)]));
  }, []);
  const reload = useCallback(() => {
    api<JobInfo[]>('GET', '/api/jobs?limit=100')
      .then((list) => setJobs(sortJobs(list)))
      .catch(() => {});
  }, []);

  useEffect(() => {
    if (!enabled) return;
    reload();
    let es: EventSource | null = null;
    try {
      es = new EventSource('/api/events');
      es.onopen = () => setLive(true);
      es.onerror = () => setLive(false);
      es.onmessage = (m) => {
        let ev: ApiEvent;
        try {
          ev = JSON.parse(m.data);
        } catch {
          return;
        }
        if (ev.type === 'job-state') upsert(ev.job);
        else if (ev.type === 'job-progress') {
          const { id, progress } = ev;
          setJobs((cur) => {
            if (!cur.some((j) => j.id === id)) {
              reload();
              return cur;
            }
            return cur.map((j) => (j.id === id && j.state === 'running' ? { ...j, progress } : j));
          });
        }
      };
    } catch {
      setLive(false);
    }
    return () => {
      es?.close();
      setLive(false);
    };
  }, [enabled, reload, upsert]);

  // Fallback and safety net: poll while the stream is down or jobs run.
  useEffect(() => {
    if (!enabled) return;
    const h = setInterval(() => {
      if (!live || jobsRef.current.some((j) => j.state === 'running')) reload();
    }, live ? 5000 : 3000);
    return () => clearInterval(h);
  }, [enabled, live, reload]);

  return { jobs, live, reload, upsert };
}
