import { FormEvent, useState } from 'react';
import { api, DatastoreInfo, enc, ExportInfo, JobInfo, SnapshotInfo, VmInfo } from '../api/client';
import { DateCell, Dialog, ErrorBox, Notice, splitList, useAction, useApi, useCan } from '../common';
import { fmtBytes, t } from '../i18n';
import { useJobs } from '../jobsfeed';
import { ConfirmDialog, VmJobDialog } from './Snapshots';

export function Vms() {
  const vms = useApi<VmInfo[]>('/api/vms', 15000);
  const stores = useApi<DatastoreInfo[]>('/api/datastores');
  const exportsList = useApi<ExportInfo[]>('/api/exports');
  const can = useCan();
  const [register, setRegister] = useState(false);
  const [history, setHistory] = useState<VmInfo | null>(null);
  const [migrate, setMigrate] = useState<VmInfo | null>(null);
  const [stop, setStop] = useState<VmInfo | null>(null);
  const [newExport, setNewExport] = useState(false);
  const [msg, setMsg] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  const ds0 = stores.data?.[0]?.name ?? '';
  const [ds, setDs] = useState('');
  const store = ds || ds0;
  return (
    <>
      <h1>{t('nav_vms')}</h1>
      <div className="toolbar">
        {can('operate') && (
          <button type="button" className="primary" onClick={() => setRegister(true)}>
            {t('register_vm')}
          </button>
        )}
        <label className="inline">
          {t('datastore')}
          <select value={store} onChange={(e) => setDs(e.target.value)}>
            {(stores.data ?? []).map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        <button type="button" onClick={vms.reload}>
          {t('refresh')}
        </button>
      </div>
      <ErrorBox error={vms.error ?? act.error} />
      <Notice text={msg} />
      {vms.data && vms.data.length === 0 && <p className="muted">{t('no_vms')}</p>}
      {vms.data && vms.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('name')}</th>
              <th scope="col">{t('status')}</th>
              <th scope="col">{t('source')}</th>
              <th scope="col">{t('hardware')}</th>
              <th scope="col">{t('disks')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {vms.data.map((v) => (
              <tr key={v.name}>
                <td>
                  {v.name}
                  {v.instant && <span className="badge state-running">{t('instant')}</span>}
                </td>
                <td>
                  {t(`vm_${v.status}` as 'vm_running')}
                  {v.error && <div className="small error-text">{v.error}</div>}
                </td>
                <td className="wrap">{v.source.kind === 'qmp' ? `qmp: ${v.source.qmp}` : `libvirt: ${v.source.domain} (${v.source.uri})`}</td>
                <td>
                  {v.cpus ?? 0} CPU · {v.memory_mib ?? 0} MiB
                </td>
                <td className="wrap">{(v.disks ?? []).map((d) => `${d.id} ${fmtBytes(d.size)} ${d.format}`).join(', ')}</td>
                <td className="actions">
                  {can('operate') && !v.instant && (
                    <button
                      type="button"
                      disabled={act.busy || !store}
                      onClick={() =>
                        act.run(async () => {
                          const j = await api<JobInfo>('POST', '/api/jobs', { kind: 'vm-backup', datastore: store, vm: v.name });
                          upsert(j);
                          setMsg(t('started_job', { id: j.id }));
                        })
                      }
                    >
                      {t('backup_now')}
                    </button>
                  )}
                  <button type="button" onClick={() => setHistory(v)}>
                    {t('history')}
                  </button>
                  {can('operate') && v.instant && (
                    <>
                      <button type="button" disabled={v.instant.migrating} onClick={() => setMigrate(v)}>
                        {t('migrate_back')}
                      </button>
                      <button type="button" className="danger" onClick={() => setStop(v)}>
                        {t('stop_instant')}
                      </button>
                    </>
                  )}
                  {can('operate') && !v.instant && (
                    <button type="button" className="danger" onClick={() => setStop(v)}>
                      {t('unregister')}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>{t('exports')}</h2>
      <div className="toolbar">
        {can('operate') && (
          <button type="button" onClick={() => setNewExport(true)}>
            {t('new_export')}
          </button>
        )}
        <button type="button" onClick={exportsList.reload}>
          {t('refresh')}
        </button>
      </div>
      <ErrorBox error={exportsList.error} />
      {exportsList.data && exportsList.data.length === 0 && <p className="muted">{t('no_exports')}</p>}
      {exportsList.data && exportsList.data.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('id')}</th>
              <th scope="col">{t('protocol')}</th>
              <th scope="col">URI</th>
              <th scope="col">{t('snapshot')}</th>
              <th scope="col">{t('size')}</th>
              <th scope="col">{t('created')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {exportsList.data.map((x) => (
              <tr key={x.id}>
                <td>{x.id}</td>
                <td>
                  {x.protocol ?? 'nbd'} {x.writable ? t('writable') : t('read_only')}
                </td>
                <td className="wrap">
                  <code>{x.uri}</code>
                </td>
                <td>
                  {x.datastore} · <code>{x.snapshot.slice(0, 12)}</code> · {x.disk}
                </td>
                <td>{fmtBytes(x.size)}</td>
                <td>
                  <DateCell iso={x.created} />
                </td>
                <td>
                  {can('operate') && (
                    <button type="button" className="danger" onClick={() => act.run(async () => { await api('DELETE', `/api/exports/${enc(x.id)}`); exportsList.reload(); })}>
                      {t('close_export')}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      {register && <RegisterDialog onClose={() => setRegister(false)} onDone={vms.reload} />}
      {history && <HistoryDialog vm={history} ds={store} onClose={() => setHistory(null)} />}
      {migrate && migrate.instant && <MigrateDialog vm={migrate} onClose={() => setMigrate(null)} />}
      {newExport && <ExportDialog stores={stores.data ?? []} onClose={() => setNewExport(false)} onDone={exportsList.reload} />}
      {stop && (
        <ConfirmDialog
          title={stop.instant ? t('stop_instant') : t('unregister')}
          text={stop.instant ? t('stop_instant_q', { name: stop.name }) : t('unregister_q', { name: stop.name })}
          confirm={stop.instant ? t('stop_instant') : t('unregister')}
          onClose={() => setStop(null)}
          action={async () => {
            await api('DELETE', `/api/vms/${enc(stop.name)}`);
            vms.reload();
          }}
        />
      )}
    </>
  );
}

function RegisterDialog({ onClose, onDone }: { onClose: () => void; onDone: () => void }) {
  const [kind, setKind] = useState<'qmp' | 'libvirt'>('qmp');
  const [name, setName] = useState('');
  const [qmp, setQmp] = useState('');
  const [agent, setAgent] = useState('');
  const [uri, setUri] = useState('qemu:///system');
  const [domain, setDomain] = useState('');
  const act = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const source = kind === 'qmp' ? { kind, qmp: qmp.trim(), ...(agent ? { agent: agent.trim() } : {}) } : { kind, uri: uri.trim(), domain: domain.trim() };
    act.run(async () => {
      await api('POST', '/api/vms', { source, ...(name ? { name: name.trim() } : {}) });
      onDone();
      onClose();
    });
  };
  return (
    <Dialog title={t('register_vm')} onClose={onClose}>
      <form className="form" onSubmit={submit}>
        <label>
          {t('connector')}
          <select value={kind} onChange={(e) => setKind(e.target.value as 'qmp')}>
            <option value="qmp">{t('qmp_socket')}</option>
            <option value="libvirt">libvirt</option>
          </select>
        </label>
        <label>
          {t('vm_name_optional')}
          <input value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        {kind === 'qmp' ? (
          <>
            <label>
              {t('qmp_socket')}
              <input value={qmp} onChange={(e) => setQmp(e.target.value)} required placeholder="/run/vm/qmp.sock" />
            </label>
            <label>
              {t('ga_socket')}
              <input value={agent} onChange={(e) => setAgent(e.target.value)} />
            </label>
          </>
        ) : (
          <>
            <label>
              URI
              <input value={uri} onChange={(e) => setUri(e.target.value)} required />
            </label>
            <label>
              {t('domain')}
              <input value={domain} onChange={(e) => setDomain(e.target.value)} required />
            </label>
          </>
        )}
        <ErrorBox error={act.error} />
        <div className="buttons">
          <button type="submit" className="primary" disabled={act.busy}>
            {t('register')}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function HistoryDialog({ vm, ds, onClose }: { vm: VmInfo; ds: string; onClose: () => void }) {
  const snaps = useApi<SnapshotInfo[]>(ds ? `/api/datastores/${enc(ds)}/snapshots` : null);
  const can = useCan();
  const [instant, setInstant] = useState<string | null>(null);
  const mine = (snaps.data ?? []).filter((s) => s.kind === 'vm' && (s.paths.includes(`vm:${vm.qemu_name}`) || s.paths.includes(`vm:${vm.name}`))).sort((a, b) => (a.time < b.time ? 1 : -1));
  return (
    <Dialog title={t('history_of', { name: vm.name })} onClose={onClose}>
      <ErrorBox error={snaps.error} />
      {snaps.data && mine.length === 0 && <p className="muted">{t('no_snapshots')}</p>}
      {mine.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">{t('time')}</th>
              <th scope="col">{t('size')}</th>
              <th scope="col">{t('id')}</th>
              <th scope="col">{t('actions')}</th>
            </tr>
          </thead>
          <tbody>
            {mine.map((s) => (
              <tr key={s.id}>
                <td>
                  <DateCell iso={s.time} />
                </td>
                <td>{fmtBytes(s.bytes)}</td>
                <td>
                  <code>{s.id.slice(0, 12)}</code>
                </td>
                <td>
                  {can('operate') && (
                    <button type="button" onClick={() => setInstant(s.id)}>
                      {t('instant_restore')}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {instant && <VmJobDialog ds={ds} snapshot={instant} mode="instant" onClose={() => setInstant(null)} />}
    </Dialog>
  );
}

function MigrateDialog({ vm, onClose }: { vm: VmInfo; onClose: () => void }) {
  const [target, setTarget] = useState('');
  const [format, setFormat] = useState('qcow2');
  const [job, setJob] = useState<string | null>(null);
  const act = useAction();
  const { upsert } = useJobs();
  return (
    <Dialog title={t('migrate_back')} onClose={onClose}>
      {job ? (
        <p>{t('started_job', { id: job })}</p>
      ) : (
        <form
          className="form"
          onSubmit={(e) => {
            e.preventDefault();
            act.run(async () => {
              const j = await api<JobInfo>('POST', '/api/jobs', { kind: 'vm-migrate-back', datastore: vm.instant!.datastore, vm: vm.name, target: target.trim(), format });
              upsert(j);
              setJob(j.id);
            });
          }}
        >
          <label>
            {t('restore_target')}
            <input value={target} onChange={(e) => setTarget(e.target.value)} required />
          </label>
          <label>
            {t('format')}
            <select value={format} onChange={(e) => setFormat(e.target.value)}>
              <option>qcow2</option>
              <option>raw</option>
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

function ExportDialog({ stores, onClose, onDone }: { stores: DatastoreInfo[]; onClose: () => void; onDone: () => void }) {
  const [ds, setDs] = useState(stores[0]?.name ?? '');
  const [snapshot, setSnapshot] = useState('');
  const [disk, setDisk] = useState('');
  const [protocol, setProtocol] = useState<'nbd' | 'nfs'>('nbd');
  const [clients, setClients] = useState('');
  const [writable, setWritable] = useState(false);
  const act = useAction();
  return (
    <Dialog title={t('new_export')} onClose={onClose}>
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          act.run(async () => {
            await api('POST', '/api/exports', { datastore: ds, snapshot: snapshot.trim(), protocol, writable, ...(disk ? { disk: disk.trim() } : {}), ...(protocol === 'nfs' ? { clients: splitList(clients) } : {}) });
            onDone();
            onClose();
          });
        }}
      >
        <label>
          {t('datastore')}
          <select value={ds} onChange={(e) => setDs(e.target.value)}>
            {stores.map((d) => (
              <option key={d.name}>{d.name}</option>
            ))}
          </select>
        </label>
        <label>
          {t('snapshot_id')}
          <input value={snapshot} onChange={(e) => setSnapshot(e.target.value)} required />
        </label>
        <label>
          {t('disk_optional')}
          <input value={disk} onChange={(e) => setDisk(e.target.value)} />
        </label>
        <label>
          {t('protocol')}
          <select value={protocol} onChange={(e) => setProtocol(e.target.value as 'nbd')}>
            <option value="nbd">NBD</option>
            <option value="nfs">NFS</option>
          </select>
        </label>
        {protocol === 'nfs' && (
          <label>
            {t('nfs_clients')}
            <input value={clients} onChange={(e) => setClients(e.target.value)} required placeholder="10.0.0.0/24" />
          </label>
        )}
        <label className="check">
          <input type="checkbox" checked={writable} onChange={(e) => setWritable(e.target.checked)} /> {t('writable_overlay')}
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
