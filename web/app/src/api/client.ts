// The only way the page talks to the appliance: same-origin fetch to the
// documented REST API (docs/openapi.json, types generated into types/schema.d.ts).
import type { components } from '../../types/schema';

export type S = components['schemas'];
export type JobInfo = S['JobInfo'];
export type JobSpec = S['JobSpec'];
export type JobProgress = S['JobProgress'];
export type SnapshotInfo = S['SnapshotInfo'];
export type DatastoreInfo = S['DatastoreInfo'];
export type ScheduleInfo = S['ScheduleInfo'];
export type ScheduleSpec = S['ScheduleSpec'];
export type KeepRules = S['KeepRules'];
export type HealthReport = S['HealthReport'];
export type HealthSample = S['HealthSample'];
export type SnapshotDirListing = S['SnapshotDirListing'];
export type SnapshotEntry = S['SnapshotEntry'];
export type ForgetPreview = S['ForgetPreview'];
export type VmInfo = S['VmInfo'];
export type ExportInfo = S['ExportInfo'];
export type TokenInfo = S['TokenInfo'];
export type TokenCreated = S['TokenCreated'];
export type SmtpSettings = S['SmtpSettings'];
export type LabDefinition = S['LabDefinition'];
export type LabRunInfo = S['LabRunInfo'];
export type LabReportInfo = S['LabReportInfo'];
export type VmFilesListing = S['VmFilesListing'];
export type TlsInfo = S['TlsInfo'];
export type Role = S['Role'];
export type ApiEvent = S['Event'];

export type Permission = 'read' | 'operate' | 'backup' | 'admin';

/** What `GET/POST /api/session` answer (`permissions` narrowed to the
 * four names the API uses). */
export type WebSession = Omit<S['WebSession'], 'permissions'> & { permissions: Permission[] };

export class ApiFailure extends Error {
  constructor(public status: number, public kind: string, message: string) {
    super(message);
  }
}

let csrf: string | null = null;
let onUnauthorized: (() => void) | null = null;

/** The CSRF token of the current session, in memory only. */
export function setCsrf(token: string | null) {
  csrf = token;
}
export function setUnauthorizedHandler(f: (() => void) | null) {
  onUnauthorized = f;
}

export async function api<T = unknown>(method: string, path: string, body?: unknown, opts: { quiet401?: boolean } = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let r: Response;
  try {
    r = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiFailure(0, 'network', String(e));
  }
  if (r.status === 401 && !opts.quiet401 && onUnauthorized) onUnauthorized();
  if (!r.ok) {
    let kind = 'error';
    let message = `${r.status} ${r.statusText}`;
    try {
      const j = await r.json();
      if (j && typeof j.message === 'string') {
        message = j.message;
        kind = j.error ?? kind;
      }
    } catch {
      /* not JSON */
    }
    throw new ApiFailure(r.status, kind, message);
  }
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const enc = encodeURIComponent;

/** A GET whose answer is plain text (a job's log). */
export async function apiText(path: string): Promise<string> {
  const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'text/plain' } });
  if (r.status === 401 && onUnauthorized) onUnauthorized();
  if (!r.ok) throw new ApiFailure(r.status, 'error', `${r.status} ${r.statusText}`);
  return r.text();
}
