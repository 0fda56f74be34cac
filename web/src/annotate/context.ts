// What the annotator's panels share: the API, who annotates, the labels, the viewer and the open case.
import type { Api, Info } from "../api";
import type { Label } from "./labels";
import type { Viewer } from "./viewer";

/** The image being annotated and where its drawing came from. */
export interface Case {
  image: string;
  /** Its file name on the server (``.nii.gz``, ``.nrrd``): NiiVue reads the format from it. */
  name: string;
  /** The lease, when it came from ``POST /activelearning/{strategy}``. */
  lease: { holder: string; expires_ts: number } | null;
  reason: string | null;
  /** The ``final`` label version the drawing started from (``If-Match``), or none yet (``If-None-Match: *``). */
  label: { version: number; etag: string; author: string } | null;
  /** The model run whose output is in the drawing, sent with the save as its provenance. */
  model: { name: string; version: number | null } | null;
}

export interface Context {
  api: Api;
  info: Info;
  labels: Label[];
  viewer: Viewer;
  /** The ``client_id`` to send: the annotator's name when auth is off (leases tell people apart by it). */
  clientId(): string | undefined;
  current: Case | null;
  /** The label value the pen, the eraser and click-guided models work on. */
  label(): Label;
  /** A message in the status line (errors in red). */
  say(text: string, error?: boolean): void;
}

/** ``params`` with the client id, as every request of the annotator sends it. */
export function withClient(ctx: Context, params: Record<string, unknown>): Record<string, unknown> {
  const id = ctx.clientId();
  return id ? { ...params, client_id: id } : params;
}

/** A file's name from its ``Content-Disposition``, else ``fallback``. */
export function fileName(answer: Response, fallback: string): string {
  const disposition = answer.headers.get("Content-Disposition") ?? "";
  return /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallback;
}
