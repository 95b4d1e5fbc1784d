import { FormEvent, useCallback, useEffect, useState } from 'react';
import { api, ApiFailure, setCsrf, setUnauthorizedHandler, WebSession } from './api/client';
import { errText, navigate, SessionCtx, usePath } from './common';
import { Key, Lang, setLang, t, useLang } from './i18n';
import { JobsCtx, useJobsFeed } from './jobsfeed';
import { Dashboard } from './pages/Dashboard';
import { Jobs } from './pages/Jobs';
import { Snapshots } from './pages/Snapshots';
import { Schedules } from './pages/Schedules';
import { Vms } from './pages/Vms';
import { Settings } from './pages/Settings';
import { Labs } from './pages/Labs';
import { Cdp } from './pages/Cdp';

const PAGES: { path: string; key: Key }[] = [
  { path: '/', key: 'nav_dashboard' },
  { path: '/jobs', key: 'nav_jobs' },
  { path: '/snapshots', key: 'nav_snapshots' },
  { path: '/schedules', key: 'nav_schedules' },
  { path: '/vms', key: 'nav_vms' },
  { path: '/cdp', key: 'nav_cdp' },
  { path: '/labs', key: 'nav_labs' },
  { path: '/settings', key: 'nav_settings' },
];

export function LangSwitch() {
  const lang = useLang();
  return (
    <label className="lang">
      <span>{t('language')}</span>
      <select value={lang} onChange={(e) => setLang(e.target.value as Lang)} data-testid="lang">
        <option value="en">English</option>
        <option value="zh-CN">简体中文</option>
      </select>
    </label>
  );
}

export function App() {
  useLang();
  // undefined: still asking the appliance; null: signed out.
  const [session, setSession] = useState<WebSession | null | undefined>(undefined);
  const [expired, setExpired] = useState(false);

  const signedOut = useCallback((wasExpired: boolean) => {
    setCsrf(null);
    setSession(null);
    setExpired(wasExpired);
  }, []);

  useEffect(() => {
    setUnauthorizedHandler(() => signedOut(true));
    api<WebSession>('GET', '/api/session', undefined, { quiet401: true })
      .then((s) => {
        setCsrf(s.csrf_token);
        setSession(s);
      })
      .catch(() => signedOut(false));
  }, [signedOut]);

  // At the session's end, ask again: a 401 then shows the sign-in page.
  useEffect(() => {
    if (!session?.expires_at) return;
    const ms = new Date(session.expires_at).getTime() - Date.now() + 1000;
    if (!(ms > 0) || ms > 2 ** 31 - 1) return;
    const h = setTimeout(() => {
      api('GET', '/api/session').catch(() => {});
    }, ms);
    return () => clearTimeout(h);
  }, [session]);

  const feed = useJobsFeed(!!session && session.permissions.includes('read'));

  useEffect(() => {
    document.title = session ? 'Lifeboat' : `${t('sign_in')} · Lifeboat`;
  });

  if (session === undefined) return <p className="loading">{t('loading')}</p>;
  if (session === null)
    return (
      <Login
        expired={expired}
        onIn={(s) => {
          setCsrf(s.csrf_token);
          setExpired(false);
          setSession(s);
        }}
      />
    );
  const logout = async () => {
    try {
      await api('DELETE', '/api/session');
    } catch {
      /* the session may be gone already */
    }
    signedOut(false);
    navigate('/');
  };
  return (
    <SessionCtx.Provider value={session}>
      <JobsCtx.Provider value={feed}>
        <Shell session={session} onLogout={logout} />
      </JobsCtx.Provider>
    </SessionCtx.Provider>
  );
}

function Shell({ session, onLogout }: { session: WebSession; onLogout: () => void }) {
  const path = usePath();
  const page = PAGES.find((p) => (p.path === '/' ? path === '/' : path === p.path || path.startsWith(p.path + '/'))) ?? PAGES[0];
  return (
    <div className="shell">
      <a className="skip" href="#main">
        {t('skip_to_content')}
      </a>
      <header className="top">
        <span className="brand">Lifeboat</span>
        <span className="who" data-testid="who">
          {session.user} · {t(`role_${session.role}` as Key)}
        </span>
        <LangSwitch />
        <button type="button" onClick={onLogout} data-testid="logout">
          {t('sign_out')}
        </button>
      </header>
      <nav className="side" aria-label={t('main_nav')}>
        <ul>
          {PAGES.map((p) => (
            <li key={p.path}>
              <a
                href={p.path}
                aria-current={p === page ? 'page' : undefined}
                onClick={(e) => {
                  e.preventDefault();
                  navigate(p.path);
                }}
              >
                {t(p.key)}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        {!session.permissions.includes('read') ? (
          <>
            <h1>{t(page.key)}</h1>
            <p className="notice">{t('no_read_permission')}</p>
          </>
        ) : null}
        {session.permissions.includes('read') && page.path === '/' && <Dashboard />}
        {session.permissions.includes('read') && page.path === '/jobs' && <Jobs />}
        {session.permissions.includes('read') && page.path === '/snapshots' && <Snapshots />}
        {session.permissions.includes('read') && page.path === '/schedules' && <Schedules />}
        {session.permissions.includes('read') && page.path === '/vms' && <Vms />}
        {session.permissions.includes('read') && page.path === '/cdp' && <Cdp />}
        {session.permissions.includes('read') && page.path === '/labs' && <Labs />}
        {session.permissions.includes('read') && page.path === '/settings' && <Settings />}
      </main>
    </div>
  );
}

function Login({ expired, onIn }: { expired: boolean; onIn: (s: WebSession) => void }) {
  const [mode, setMode] = useState<'password' | 'token'>('password');
  const [username, setUsername] = useState('admin');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = mode === 'password' ? { username, password } : { token: token.trim() };
      const s = await api<WebSession>('POST', '/api/session', body, { quiet401: true });
      onIn(s);
    } catch (err) {
      setError(err instanceof ApiFailure && err.status === 401 ? t('login_failed', { message: err.message }) : errText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="login-page">
      <main id="main" className="login">
        <div className="login-head">
          <span className="brand">Lifeboat</span>
          <LangSwitch />
        </div>
        <h1>{t('sign_in')}</h1>
        {expired && (
          <p className="notice" role="status">
            {t('session_expired')}
          </p>
        )}
        <form onSubmit={submit}>
          {mode === 'password' ? (
            <>
              <label>
                {t('username')}
                <input name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required />
              </label>
              <label>
                {t('password')}
                <input name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required />
              </label>
            </>
          ) : (
            <label>
              {t('api_token')}
              <input name="token" type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} required placeholder="id.secret" />
            </label>
          )}
          {error && (
            <p className="error" role="alert" data-testid="login-error">
              {error}
            </p>
          )}
          <button type="submit" className="primary" disabled={busy}>
            {t('sign_in')}
          </button>
        </form>
        <button type="button" className="link" onClick={() => setMode(mode === 'password' ? 'token' : 'password')}>
          {mode === 'password' ? t('sign_in_with_token') : t('sign_in_with_password')}
        </button>
      </main>
    </div>
  );
}
