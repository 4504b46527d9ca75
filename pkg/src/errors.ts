import { ANNALS_ERROR_CODES, type AnnalsErrorCode } from "./generated/error-codes.js";
import type { AnnalsEvent } from "./types.js";

// The codes are defined once, in Rust (`ErrorCode` in src/error_code.rs), and generated
// into ./generated/error-codes.ts; pkg/test/error-codes.test.mjs checks the generated list
// against the core's at run time.
export { ANNALS_ERROR_CODES, type AnnalsErrorCode };

const CODES: ReadonlySet<string> = new Set<string>(ANNALS_ERROR_CODES);

/**
 * One reason an event was refused (`INVALID_EVENT`): a schema's issue, or a value JSON cannot
 * carry. `path` leads from the event to the value, e.g. `["data", "items", 2, "due"]`.
 */
export interface EventIssue {
  message: string;
  path: (string | number)[];
}

/** Extra facts an error may carry (a version conflict carries the first three). */
export interface AnnalsErrorDetails {
  stream?: string;
  expectedVersion?: number | "any" | "no_stream" | "exists";
  actualVersion?: number;
  /** For `INVALID_EVENT`: the refused event's place in its batch (0-based). */
  index?: number;
  /** For `INVALID_EVENT`: the refused event's type. */
  type?: string;
  /** For `INVALID_EVENT`: why (the validator's issues, or the value JSON cannot carry). */
  issues?: EventIssue[];
  /** For `DUPLICATE_ID`: the event stored under the reused id (the first one, for a mixed batch). */
  event?: AnnalsEvent;
  /** For `DUPLICATE_ID`: the known ids of the refused batch. */
  ids?: string[];
  cause?: unknown;
}

/** The one error type annals throws. Check `code`, not the message. */
export class AnnalsError extends Error {
  override readonly name = "AnnalsError";
  readonly code: AnnalsErrorCode;
  /** For `WRONG_EXPECTED_VERSION`: the stream in conflict. */
  readonly stream?: string;
  /** For `WRONG_EXPECTED_VERSION`: what the append expected. */
  readonly expectedVersion?: number | "any" | "no_stream" | "exists";
  /** For `WRONG_EXPECTED_VERSION`: the stream's version when the append was checked. */
  readonly actualVersion?: number;
  /** For `INVALID_EVENT`: the refused event's place in its batch (0-based; for `execute`, in what `decide` returned). */
  readonly index?: number;
  /** For `INVALID_EVENT`: the refused event's type. */
  readonly type?: string;
  /** For `INVALID_EVENT`: the validator's issues (or the value JSON cannot carry), with paths from the event. */
  readonly issues?: EventIssue[];
  /** For `DUPLICATE_ID`: the event stored under the reused id (the first one, for a mixed batch). */
  readonly event?: AnnalsEvent;
  /** For `DUPLICATE_ID`: the known ids of the refused batch. */
  readonly ids?: string[];

  constructor(code: AnnalsErrorCode, message: string, details: AnnalsErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.stream !== undefined) this.stream = details.stream;
    if (details.expectedVersion !== undefined) this.expectedVersion = details.expectedVersion;
    if (details.actualVersion !== undefined) this.actualVersion = details.actualVersion;
    if (details.index !== undefined) this.index = details.index;
    if (details.type !== undefined) this.type = details.type;
    if (details.issues !== undefined) this.issues = details.issues;
    if (details.event !== undefined) this.event = details.event;
    if (details.ids !== undefined) this.ids = details.ids;
  }
}

/** Is `value` an {@link AnnalsError} (optionally with this code)? Works across copies of the package. */
export function isAnnalsError(value: unknown, code?: AnnalsErrorCode): value is AnnalsError {
  if (value instanceof AnnalsError) return code === undefined || value.code === code;
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { name?: unknown }).name === "AnnalsError" &&
    typeof (value as { code?: unknown }).code === "string" &&
    (code === undefined || (value as { code: unknown }).code === code)
  );
}

/**
 * Turns what the wasm core threw (a JS `Error` named "AnnalsError" with a `code`) into an
 * {@link AnnalsError} instance. Anything else is returned unchanged.
 */
export function fromWasmError(error: unknown): unknown {
  if (error instanceof AnnalsError) return error;
  if (
    error instanceof Error &&
    error.name === "AnnalsError" &&
    typeof (error as { code?: unknown }).code === "string" &&
    CODES.has((error as unknown as { code: string }).code)
  ) {
    const e = error as Error & {
      code: AnnalsErrorCode;
      stream?: string;
      expectedVersion?: number | "any" | "no_stream" | "exists";
      actualVersion?: number;
      event?: AnnalsEvent;
      ids?: string[];
    };
    const details: AnnalsErrorDetails = {};
    if (typeof e.stream === "string") details.stream = e.stream;
    if (e.expectedVersion !== undefined) details.expectedVersion = e.expectedVersion;
    if (typeof e.actualVersion === "number") details.actualVersion = e.actualVersion;
    if (typeof e.event === "object" && e.event !== null) details.event = e.event;
    if (Array.isArray(e.ids)) details.ids = e.ids;
    return new AnnalsError(e.code, e.message, details);
  }
  return error;
}

/** What `on("error")` reports when a process manager's handler or one of its commands fails. */
export class ReactorError extends AnnalsError {
  /** The reactor's `name`. */
  readonly reactor: string;
  /** The event being handled (it is handled again after `retryInMs`). */
  override readonly event: AnnalsEvent;
  /** 1 for the first failure on this event. */
  readonly attempt: number;
  /** When the handler runs again (ms); -1 when it will not (the store closed). */
  readonly retryInMs: number;

  constructor(reactor: string, event: AnnalsEvent, attempt: number, retryInMs: number, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const where =
      typeof event === "object" && event !== null
        ? ` on event ${String((event as { position?: unknown }).position)} (${String((event as { type?: unknown }).type)})`
        : "";
    super("REACTOR_FAILED", `reactor "${reactor}" failed${where}, attempt ${attempt}: ${reason}`, { cause });
    this.reactor = reactor;
    this.event = event;
    this.attempt = attempt;
    this.retryInMs = retryInMs;
  }
}
