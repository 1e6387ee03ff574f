/**
 * Our own throwaway redis-server processes, for tests that must stop, pause or cluster a
 * server (never the shared one at REDIS_URL): each on a free loopback port, in its own temp
 * directory, with no RDB snapshots. Everything started here is killed when the process exits,
 * even if a suite forgot to stop it.
 *
 * Needs `redis-server` and `redis-cli` on PATH; `describeWithRedisServer` skips loudly without
 * them, and fails under CI=true.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createCluster, type RedisClusterType } from 'redis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { IN_CI } from './services.ts';

const SERVER = process.env['REDIS_SERVER_BIN'] ?? 'redis-server';
const CLI = process.env['REDIS_CLI_BIN'] ?? 'redis-cli';

function runs(binary: string): boolean {
  const result = spawnSync(binary, ['--version'], { stdio: 'ignore', timeout: 5000 });
  return result.error === undefined && result.status === 0;
}

/** Whether redis-server and redis-cli can be started here. */
export const redisServerAvailable = runs(SERVER) && runs(CLI);

/** `describe` for a suite that starts its own redis-server: skips loudly without one, fails under CI. */
export function describeWithRedisServer(name: string, body: () => void): void {
  if (redisServerAvailable) {
    describe(name, body);
    return;
  }
  const what = `${SERVER} and ${CLI} on PATH`;
  if (IN_CI) {
    describe(name, () => {
      it(`requires ${what} (CI=true makes it mandatory)`, () => {
        throw new Error(`${what} are required under CI`);
      });
    });
    return;
  }
  console.warn(`\n!!! ${what} not found: SKIPPING "${name}". Set CI=true to make this a failure.\n`);
  describe.skip(name, body);
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Kills `pid` (and removes its `dir`) when this process dies, however it dies (a test runner may kill its workers, and
 * then no 'exit' handler runs): a shell blocks reading a pipe from us, and our death closes it.
 * Returns the function that disarms it, for a server stopped the ordinary way.
 */
function watchdog(pid: number, dir: string): () => void {
  const script = 'read _; kill -KILL "$0" 2>/dev/null; sleep 0.2; rm -rf -- "$1"';
  const guard = spawn('sh', ['-c', script, String(pid), dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  guard.once('error', () => {});
  guard.unref();
  (guard.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  return () => {
    guard.kill('SIGKILL');
    guard.stdin?.destroy();
  };
}

/** One redis-server of ours. `start` after `stop`/`kill` restarts it on the same port and directory. */
export interface RedisServer {
  readonly port: number;
  /** `redis://[:password@]127.0.0.1:port` */
  readonly url: string;
  readonly dir: string;
  /** Starts it (again) and waits until it answers PING. */
  start(): Promise<void>;
  /** SIGKILL (a crash) by default, or SIGTERM; resolves once it has exited. */
  stop(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** SIGSTOP: connections stay open, nothing is answered. */
  pause(): void;
  /** SIGCONT */
  resume(): void;
  /** Stops it and removes its directory. Idempotent. */
  destroy(): Promise<void>;
  /** Its last output, for a failure message. */
  output(): string;
}

export interface RedisServerOptions {
  readonly port?: number;
  /** `requirepass` */
  readonly password?: string;
  /** AOF with `appendfsync always`, so a SIGKILL loses no acknowledged write. */
  readonly appendOnly?: boolean;
  readonly extraArgs?: readonly string[];
}

/** Starts a redis-server on a free loopback port (or `port`) and waits until it answers. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const port = options.port ?? (await freePort(false));
  const dir = mkdtempSync(join(tmpdir(), 'ordo-redis-'));
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--daemonize', 'no', '--loglevel', 'warning', '--logfile', '',
    ...(options.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    ...(options.password === undefined ? [] : ['--requirepass', options.password]),
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  let log = '';
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`;

  const stop = async (signal: 'SIGKILL' | 'SIGTERM' = 'SIGKILL'): Promise<void> => {
    const running = child;
    child = undefined;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill('SIGCONT'); // a paused server cannot act on SIGTERM
    running.kill(signal);
    await exited;
  };

  const server: RedisServer = {
    port,
    url: `redis://${auth}127.0.0.1:${port}`,
    dir,
    async start() {
      if (child !== undefined) throw new Error(`redis-server on ${port} is already running`);
      const started = spawn(SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      child = started;
      live.add(started);
      const disarm = started.pid === undefined ? () => {} : watchdog(started.pid, dir);
      started.once('exit', () => {
        live.delete(started);
        disarm();
      });
      const keep = (chunk: Buffer): void => {
        log = (log + chunk.toString()).slice(-4000);
      };
      started.stdout?.on('data', keep);
      started.stderr?.on('data', keep);
      started.once('error', (error) => keep(Buffer.from(String(error))));
      const deadline = Date.now() + 15_000;
      while (!(await answers(port))) {
        if (started.exitCode !== null || Date.now() > deadline) {
          await stop();
          throw new Error(`redis-server on ${port} did not start:\n${log}`);
        }
        await sleep(25);
      }
    },
    stop,
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    output: () => log,
  };
  try {
    await server.start();
  } catch (error) {
    await server.destroy();
    throw error;
  }
  return server;
}

/** Three (or `size`) masters in one cluster, no replicas, every slot assigned, state ok. */
export interface RedisCluster {
  readonly servers: readonly RedisServer[];
  /** For `createCluster({ rootNodes })`. */
  readonly rootNodes: ReadonlyArray<{ readonly url: string }>;
  /** Stops every server and removes their directories. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Inside a describe: a three-master cluster started before its tests, with a connected cluster
 * client of the test's own (no offline queue), both stopped after them.
 */
export function useRedisCluster(): { readonly cluster: () => RedisCluster; readonly client: () => RedisClusterType } {
  let cluster: RedisCluster | undefined;
  let client: RedisClusterType | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
    client = createCluster({ rootNodes: [...cluster.rootNodes], defaults: { disableOfflineQueue: true } });
    client.on('error', () => {});
    await client.connect();
  }, 60_000);
  afterAll(async () => {
    try {
      await client?.close();
    } finally {
      await cluster?.stop();
    }
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the test cluster is not started yet');
    return value;
  };
  return { cluster: () => started(cluster), client: () => started(client) };
}

/** Starts `size` cluster-enabled servers, joins them with `redis-cli --cluster create`, waits for `cluster_state:ok`. */
export async function startRedisCluster(size = 3): Promise<RedisCluster> {
  const servers: RedisServer[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((server) => server.destroy()));
  };
  try {
    for (let i = 0; i < size; i++) {
      servers.push(
        await startRedisServer({
          port: await freePort(true),
          extraArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'],
        }),
      );
    }
    const addresses = servers.map((server) => `127.0.0.1:${server.port}`);
    const created = await cli(['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], 30_000);
    if (created.code !== 0) throw new Error(`redis-cli --cluster create failed:\n${created.output}`);
    const deadline = Date.now() + 20_000;
    for (const server of servers) {
      while (!(await cli(['-p', String(server.port), 'cluster', 'info'], 5000)).output.includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error(`cluster node ${server.port} never reached cluster_state:ok`);
        await sleep(50);
      }
    }
    return { servers, rootNodes: servers.map((server) => ({ url: server.url })), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Runs redis-cli; resolves with its exit code and output (never rejects). */
export function cli(args: readonly string[], timeoutMs = 10_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(CLI, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', (error) => resolve({ code: null, output: `${output}${String(error)}` }));
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** Whether something on the port answers PING as a ready Redis (`+PONG`, or `-NOAUTH` behind a password). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
    });
  });
}

/** A loopback port nobody listens on; with `bus`, port + 10000 (a cluster's bus port) is free too. */
export async function freePort(bus: boolean): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await isFree(port)) && (!bus || (await isFree(port + 10_000)))) return port;
  }
  throw new Error('no free loopback port found');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen({ host: '127.0.0.1', port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}
