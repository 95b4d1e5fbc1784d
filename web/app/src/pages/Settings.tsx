import { FormEvent, useEffect, useState } from 'react';
import { api, DatastoreInfo, enc, Role, SmtpSettings, TlsInfo, TokenCreated, TokenInfo } from '../api/client';
import { DateCell, Dialog, ErrorBox, Notice, splitList, useAction, useApi, useCan } from '../common';
import { fmtBytes, t } from '../i18n';
import { ConfirmDialog } from './Snapshots';

export function Settings() {
  const can = useCan();
  const admin = can('admin');
  return (
    <>
      <h1>{t('nav_settings')}</h1>
      <Datastores />
      {admin ? (
        <>
          <Tls />
          <Tokens />
          <Agents />
          <Smtp />
          <Password />
        </>
      ) : (
        <p className="muted">{t('admin_only_settings')}</p>
      )}
    </>
  );
}

function Datastores() {
  const list = useApi<DatastoreInfo[]>('/api/datastores');
  const can = useCan();
  const [add, setAdd] = useState(false);
  return (
    <section aria-labelledby="ds-h">
      <h2 id="ds-h">{t('datastores')}</h2>
      <ErrorBox error={list.error} />
      {list.data && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('name')}</th>
              <th scope="col">{t('path')}</th>
              <th scope="col">{t('snapshots')}</th>
              <th scope="col">{t('used')}</th>
              <th scope="col">{t('free_col')}</th>
              <th scope="col">{t('flags')}</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((d) => (
              <tr key={d.name}>
                <td>{d.name}</td>
                <td>
                  <code>{d.path}</code>
                </td>
                <td>{d.snapshots}</td>
                <td>{fmtBytes(d.used_bytes)}</td>
                <td>
                  {fmtBytes(d.free_bytes)} / {fmtBytes(d.total_bytes)}
                </td>
                <td>
                  {d.encrypted && <span className="tag">{t('encrypted')}</span>}
                  {d.append_only && <span className="tag">{t('append_only')}</span>}
                  <span className="tag">{d.compression}</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {can('admin') && (
        <button type="button" onClick={() => setAdd(true)}>
          {t('add_datastore')}
        </button>
      )}
      {add && <AddDatastore onClose={() => setAdd(false)} onDone={list.reload} />}
    </section>
  );
}

function AddDatastore({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const [name, setName] = useState('');
  const [path, setPath] = useState('');
  const [pw, setPw] = useState('');
  const [pw2, setPw2] = useState('');
  const [appendOnly, setAppendOnly] = useState(false);
  const act = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (pw !== pw2) {
      act.setError(t('passwords_differ'));
      return;
    }
    act.run(async () => {
      await api('POST', '/api/datastores', { name: name.trim(), path: path.trim(), append_only: appendOnly, ...(pw ? { encryption_password: pw } : {}) });
      onDone();
      onClose();
    });
  };
  return (
    <Dialog title={t('add_datastore')} onClose={onClose}>
      <form className="form" onSubmit={submit}>
        <label>
          {t('name')}
          <input value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z0-9_\-]+" />
        </label>
        <label>
          {t('path')}
          <input value={path} onChange={(e) => setPath(e.target.value)} required placeholder="/srv/backups/main" />
        </label>
        <label>
          {t('encryption_password')} <span className="muted small">{t('encryption_help')}</span>
          <input type="password" autoComplete="new-password" value={pw} onChange={(e) => setPw(e.target.value)} minLength={8} />
        </label>
        <label>
          {t('repeat_password')}
          <input type="password" autoComplete="new-password" value={pw2} onChange={(e) => setPw2(e.target.value)} />
        </label>
        <label className="check">
          <input type="checkbox" checked={appendOnly} onChange={(e) => setAppendOnly(e.target.checked)} /> {t('append_only_help')}
        </label>
        <ErrorBox error={act.error} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('create')}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function Tls() {
  const tls = useApi<TlsInfo>('/api/settings/tls');
  return (
    <section aria-labelledby="tls-h">
      <h2 id="tls-h">{t('tls_fingerprint')}</h2>
      <ErrorBox error={tls.error} />
      {tls.data && (
        <p>
          <code className="fingerprint" data-testid="fingerprint">
            {tls.data.fingerprint}
          </code>
        </p>
      )}
    </section>
  );
}

function SecretDialog({ created, onClose }: { created: TokenCreated; onClose: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <Dialog title={t('token_created')} onClose={onClose}>
      <p>{t('token_once')}</p>
      <label>
        {t('api_token')}
        <input readOnly value={created.token} onFocus={(e) => e.target.select()} data-testid="new-token" />
      </label>
      <div className="buttons">
        <button
          type="button"
          className="primary"
          onClick={async () => {
            try {
              await navigator.clipboard.writeText(created.token);
              setCopied(true);
            } catch {
              setCopied(false);
            }
          }}
        >
          {copied ? t('copied') : t('copy')}
        </button>
        <button type="button" onClick={onClose}>
          {t('close')}
        </button>
      </div>
    </Dialog>
  );
}

const ROLES: Role[] = ['read-only', 'backup-only', 'operator', 'admin'];

function Tokens() {
  const list = useApi<TokenInfo[]>('/api/tokens');
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('read-only');
  const [created, setCreated] = useState<TokenCreated | null>(null);
  const [revoke, setRevoke] = useState<TokenInfo | null>(null);
  const act = useAction();
  return (
    <section aria-labelledby="tok-h">
      <h2 id="tok-h">{t('api_tokens')}</h2>
      <ErrorBox error={list.error} />
      {list.data && list.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('name')}</th>
              <th scope="col">{t('role')}</th>
              <th scope="col">{t('id')}</th>
              <th scope="col">{t('created')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {list.data.map((tk) => (
              <tr key={tk.id}>
                <td>
                  {tk.name}
                  {tk.agent && <span className="tag">{t('agent')}</span>}
                </td>
                <td>{t(`role_${tk.role}` as 'role_admin')}</td>
                <td>
                  <code>{tk.id}</code>
                </td>
                <td>
                  <DateCell iso={tk.created} />
                </td>
                <td>
                  <button type="button" className="danger" onClick={() => setRevoke(tk)}>
                    {t('revoke')}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form
        className="form inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          act.run(async () => {
            setCreated(await api<TokenCreated>('POST', '/api/tokens', { name: name.trim(), role }));
            setName('');
            list.reload();
          });
        }}
      >
        <label>
          {t('token_name')}
          <input value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z0-9_\-]{1,64}" />
        </label>
        <label>
          {t('role')}
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {t(`role_${r}` as 'role_admin')}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={act.busy}>
          {t('create_token')}
        </button>
      </form>
      <ErrorBox error={act.error} />
      {created && <SecretDialog created={created} onClose={() => setCreated(null)} />}
      {revoke && (
        <ConfirmDialog
          title={t('revoke')}
          text={t('revoke_q', { name: revoke.name })}
          confirm={t('revoke')}
          onClose={() => setRevoke(null)}
          action={async () => {
            await api('DELETE', `/api/tokens/${enc(revoke.id)}`);
            list.reload();
          }}
        />
      )}
    </section>
  );
}

function Agents() {
  const list = useApi<TokenInfo[]>('/api/agents');
  const [name, setName] = useState('');
  const [created, setCreated] = useState<TokenCreated | null>(null);
  const [revoke, setRevoke] = useState<TokenInfo | null>(null);
  const act = useAction();
  return (
    <section aria-labelledby="ag-h">
      <h2 id="ag-h">{t('agents')}</h2>
      <ErrorBox error={list.error} />
      {list.data && list.data.length === 0 && <p className="muted">{t('no_agents')}</p>}
      {list.data && list.data.length > 0 && (
        <ul className="compact">
          {list.data.map((a) => (
            <li key={a.id}>
              {a.name} <code>{a.id}</code> · <DateCell iso={a.created} />{' '}
              <button type="button" className="danger" onClick={() => setRevoke(a)}>
                {t('revoke')}
              </button>
            </li>
          ))}
        </ul>
      )}
      <form
        className="form inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          act.run(async () => {
            setCreated(await api<TokenCreated>('POST', '/api/agents', { name: name.trim() }));
            setName('');
            list.reload();
          });
        }}
      >
        <label>
          {t('agent_name')}
          <input value={name} onChange={(e) => setName(e.target.value)} required />
        </label>
        <button type="submit" disabled={act.busy}>
          {t('register_agent')}
        </button>
      </form>
      <ErrorBox error={act.error} />
      {created && <SecretDialog created={created} onClose={() => setCreated(null)} />}
      {revoke && (
        <ConfirmDialog
          title={t('revoke')}
          text={t('revoke_q', { name: revoke.name })}
          confirm={t('revoke')}
          onClose={() => setRevoke(null)}
          action={async () => {
            await api('DELETE', `/api/agents/${enc(revoke.id)}`);
            list.reload();
          }}
        />
      )}
    </section>
  );
}

function Smtp() {
  const cur = useApi<SmtpSettings>('/api/settings/smtp');
  const [s, setS] = useState<SmtpSettings>({ host: '', from: '', to: [], security: 'starttls' });
  const [to, setTo] = useState('');
  const [msg, setMsg] = useState<string | null>(null);
  const act = useAction();
  useEffect(() => {
    if (cur.data) {
      setS(cur.data);
      setTo(cur.data.to.join(', '));
    }
  }, [cur.data]);
  const set = (k: keyof SmtpSettings, v: unknown) => setS({ ...s, [k]: v });
  return (
    <section aria-labelledby="smtp-h">
      <h2 id="smtp-h">{t('smtp')}</h2>
      {cur.error && !cur.data && <p className="muted">{t('smtp_none')}</p>}
      <form
        className="form grid2"
        onSubmit={(e) => {
          e.preventDefault();
          setMsg(null);
          act.run(async () => {
            const body = { ...s, to: splitList(to), port: s.port ? Number(s.port) : null, username: s.username || null };
            setS(await api<SmtpSettings>('PUT', '/api/settings/smtp', body));
            cur.reload();
            setMsg(t('saved'));
          });
        }}
      >
        <label>
          {t('smtp_host')}
          <input value={s.host} onChange={(e) => set('host', e.target.value)} required />
        </label>
        <label>
          {t('smtp_port')}
          <input type="number" min={1} max={65535} value={s.port ?? ''} onChange={(e) => set('port', e.target.value ? Number(e.target.value) : null)} />
        </label>
        <label>
          {t('smtp_security')}
          <select value={s.security ?? 'starttls'} onChange={(e) => set('security', e.target.value)}>
            <option value="starttls">STARTTLS</option>
            <option value="tls">TLS</option>
            <option value="none">{t('none')}</option>
          </select>
        </label>
        <label>
          {t('smtp_from')}
          <input value={s.from} onChange={(e) => set('from', e.target.value)} required />
        </label>
        <label>
          {t('smtp_to')}
          <input value={to} onChange={(e) => setTo(e.target.value)} required />
        </label>
        <label>
          {t('username')}
          <input value={s.username ?? ''} onChange={(e) => set('username', e.target.value)} autoComplete="off" />
        </label>
        <label>
          {t('password')}
          <input type="password" value={s.password ?? ''} onChange={(e) => set('password', e.target.value)} autoComplete="new-password" />
        </label>
        <label>
          {t('smtp_ca')}
          <input value={s.ca_file ?? ''} onChange={(e) => set('ca_file', e.target.value || null)} />
        </label>
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('save')}
          </button>
          <button
            type="button"
            disabled={act.busy || !cur.data}
            onClick={() => {
              setMsg(null);
              act.run(async () => {
                await api('POST', '/api/settings/smtp/test');
                setMsg(t('test_mail_sent'));
              });
            }}
          >
            {t('send_test_mail')}
          </button>
          <button
            type="button"
            className="danger"
            disabled={act.busy || !cur.data}
            onClick={() =>
              act.run(async () => {
                await api('DELETE', '/api/settings/smtp');
                setS({ host: '', from: '', to: [], security: 'starttls' });
                setTo('');
                cur.reload();
                setMsg(t('smtp_removed'));
              })
            }
          >
            {t('remove_smtp')}
          </button>
        </div>
      </form>
      <ErrorBox error={act.error} />
      <Notice text={msg} />
    </section>
  );
}

function Password() {
  const [cur, setCur] = useState('');
  const [pw, setPw] = useState('');
  const [pw2, setPw2] = useState('');
  const act = useAction();
  return (
    <section aria-labelledby="pw-h">
      <h2 id="pw-h">{t('change_password')}</h2>
      <p className="muted">{t('password_ends_sessions')}</p>
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          if (pw !== pw2) {
            act.setError(t('passwords_differ'));
            return;
          }
          act.run(() => api('PUT', '/api/password', { current_password: cur, new_password: pw }));
        }}
      >
        <input type="text" name="username" autoComplete="username" value="admin" readOnly hidden />
        <label>
          {t('current_password')}
          <input type="password" autoComplete="current-password" value={cur} onChange={(e) => setCur(e.target.value)} required />
        </label>
        <label>
          {t('new_password')}
          <input type="password" autoComplete="new-password" value={pw} onChange={(e) => setPw(e.target.value)} required minLength={8} />
        </label>
        <label>
          {t('repeat_password')}
          <input type="password" autoComplete="new-password" value={pw2} onChange={(e) => setPw2(e.target.value)} required />
        </label>
        <ErrorBox error={act.error} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('change_password')}
          </button>
        </div>
      </form>
    </section>
  );
}
