// The JSON API client: the same REST API every client uses, with the user's bearer token.

export const ROLES = ["monailabel-user", "monailabel-annotator", "monailabel-reviewer", "monailabel-admin"];
export type Role = "user" | "annotator" | "reviewer" | "admin";
export type JobKind = "train" | "scoring" | "batch_infer";

export interface Task {
  id: string;
  status: "SUBMITTED" | "RUNNING" | "DONE" | "ERROR" | "STOPPED" | string;
  request: Record<string, unknown>;
  start_ts: string;
  end_ts?: string;
  kind: JobKind;
  name: string;
  created_by?: string | null;
  details?: string[];
  progress?: TrainProgress;
  result?: unknown;
  error?: string;
}

export interface TrainProgress {
  current_epoch?: number;
  total_epochs?: number;
  current_iteration?: number;
  total_iterations?: number;
  iteration?: number;
  iterations_total?: number;
  percent?: number;
  time_left_s?: number | null;
  best_metric?: number;
  train?: { metrics?: Record<string, number> };
  eval?: { metrics?: Record<string, number> };
  [key: string]: unknown;
}

export interface Info {
  name: string;
  version?: string;
  labels: unknown;
  models: Record<string, ModelInfo>;
  strategies?: Record<string, { description?: string; config?: Record<string, unknown> }>;
  trainers: Record<string, { description?: string; config?: Record<string, unknown>; model?: string }>;
  scoring?: Record<string, { description?: string }>;
  datastore?: Stats;
}

export interface ModelInfo {
  type: string;
  description?: string;
  state?: string;
  version?: number | null;
  /** Label name -> value (``[]`` when the model names none, as click-guided ones). */
  labels?: Record<string, number> | unknown[];
  dimension?: number;
}

export interface Stats {
  total: number;
  completed: number;
  label_tags: Record<string, number>;
}

export interface Annotator {
  name: string;
  labels_saved: number;
  final_labels: number;
  holding: number;
  saved_leases: number;
  median_handout_to_save_s: number | null;
}

export interface Progress {
  ts: number;
  images: number;
  labelled: number;
  final: number;
  label_tags: Record<string, number>;
  annotators: Annotator[];
  finals_by_day: { day_ts: number; new: number; total: number }[];
}

export interface ModelVersion {
  model: string;
  version: number;
  active: boolean;
  source: string;
  created_by: string;
  created_ts: number;
  activated_ts: number | null;
  retired_ts: number | null;
  checksum: string;
  size_bytes: number;
  metrics: Record<string, unknown>;
  params: Record<string, unknown>;
  duration_s: number | null;
}

export interface Lease {
  image: string;
  holder: string;
  strategy: string;
  created_ts: number;
  expires_ts: number;
}

export interface LabelVersion {
  image: string;
  tag: string;
  version: number;
  etag: string;
  name: string;
  size_bytes: number;
  author: string;
  client_id: string | null;
  ts: number;
  parent_version: number | null;
  model: string | null;
  model_version: number | null;
  source: string;
}

export interface Who {
  username: string;
  roles: string[];
}

/** An answer other than 2xx: its status and the server's ``detail``. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`${status}: ${detail}`);
  }
}

const TOKEN_KEY = "labelloop.token";
/** Each kind's status and stop route, and the prefix of its start route. */
const JOB_PATH: Record<JobKind, string> = { train: "/train/", scoring: "/scoring/", batch_infer: "/batch/infer" };
const START_PATH: Record<JobKind, string> = { train: "/train/", scoring: "/scoring/", batch_infer: "/batch/infer/" };

export class Api {
  /** Whether the server asks for a log-in. */
  authEnabled = false;
  /** Called when the server answers 401: the token ran out or was revoked. */
  onUnauthorized: () => void = () => {};
  private token: string | null = sessionStorage.getItem(TOKEN_KEY);

  get loggedIn(): boolean {
    return this.token !== null;
  }

  /** Whether auth is on: the page says so when this server served it, else ``GET /auth/`` (404: off). */
  async detectAuth(): Promise<void> {
    const mark = document.querySelector<HTMLMetaElement>('meta[name="labelloop-auth"]')?.content;
    if (mark === "on" || mark === "off") {
      this.authEnabled = mark === "on";
      return;
    }
    const answer = await fetch("/auth/");
    this.authEnabled = answer.ok && (await answer.json()).enabled === true;
  }

  async login(username: string, password: string): Promise<void> {
    const body = new URLSearchParams({ username, password, grant_type: "password" });
    const answer = await fetch("/auth/token", { method: "POST", body });
    if (!answer.ok) throw new ApiError(answer.status, await detail(answer));
    this.token = (await answer.json()).access_token as string;
    sessionStorage.setItem(TOKEN_KEY, this.token);
  }

  /** Forget the token; ``everywhere`` also drops the session cookie that OHIF's requests carry. */
  logout(everywhere = false): void {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (everywhere) void fetch("/auth/token", { method: "DELETE", keepalive: true }).catch(() => {});
  }

  /** Who is logged in; with auth off, the server's user with every role. */
  async who(): Promise<Who> {
    if (!this.authEnabled) return { username: "(auth off)", roles: [...ROLES] };
    return this.json<Who>("GET", "/auth/token/valid");
  }

  async request(method: string, path: string, body?: unknown): Promise<Response> {
    if (body === undefined) return this.send(method, path);
    return this.send(method, path, JSON.stringify(body), { "Content-Type": "application/json" });
  }

  /** Like ``request``, with a body as it is (a form, bytes) and headers of the caller's (``If-Match``). */
  async send(method: string, path: string, body?: BodyInit, extra: Record<string, string> = {}): Promise<Response> {
    const headers: Record<string, string> = { ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const answer = await fetch(path, { method, headers, body });
    if (answer.status === 401 && this.authEnabled) {
      this.logout();
      this.onUnauthorized();
    }
    if (!answer.ok) throw new ApiError(answer.status, await detail(answer));
    return answer;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.request(method, path, body)).json() as Promise<T>;
  }

  info = () => this.json<Info>("GET", "/info/");
  stats = () => this.json<Stats>("GET", "/datastore/?output=stats");
  progress = () => this.json<Progress>("GET", "/datastore/progress");
  leases = () => this.json<Lease[]>("GET", "/activelearning/leases");
  tasks = (kind: JobKind) => this.json<Task[]>("GET", `${JOB_PATH[kind]}?all=true`);
  start = (kind: JobKind, name: string, params: Record<string, unknown>) =>
    this.json<Task>("POST", `${START_PATH[kind]}${encodeURIComponent(name)}`, params);
  stop = (kind: JobKind) => this.json<Task | null>("DELETE", JOB_PATH[kind]);
  versions = (model: string) => this.json<ModelVersion[]>("GET", `/model/${encodeURIComponent(model)}/versions`);
  activate = (model: string, version: number) =>
    this.json<ModelVersion>("POST", `/model/${encodeURIComponent(model)}/versions/${version}/activate`);
  labelVersions = (image?: string, limit = 100) =>
    this.json<LabelVersion[]>(
      "GET",
      `/datastore/label/versions?${new URLSearchParams({ ...(image ? { image } : {}), limit: String(limit) })}`,
    );

  /** A label version's file, with the name the server gives it. */
  async labelFile(image: string, tag: string, version: number): Promise<{ blob: Blob; name: string }> {
    const query = new URLSearchParams({ label: image, tag, version: String(version) });
    const answer = await this.request("GET", `/datastore/label?${query}`);
    const disposition = answer.headers.get("Content-Disposition") ?? "";
    const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? `${image}_${tag}_v${version}`;
    return { blob: await answer.blob(), name };
  }
}

async function detail(answer: Response): Promise<string> {
  try {
    const body = await answer.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return answer.statusText || `HTTP ${answer.status}`;
  }
}

/** Whether ``roles`` include ``role`` (roles are hierarchical: admin includes reviewer, and so on). */
export function has(roles: string[], role: Role): boolean {
  const need = ROLES.indexOf(`monailabel-${role}`);
  return roles.some((r) => ROLES.indexOf(r) >= need);
}
