/** Every code an {@link AnnalsError} can carry. */
export type AnnalsErrorCode =
  /** The stream was not at the expected version; nothing was written. */
  | "WRONG_EXPECTED_VERSION"
  /** An event is malformed: missing or empty `type`/`stream`, not JSON-serialisable, too large. */
  | "INVALID_EVENT"
  /** An argument other than an event is malformed (options, a position, a projection name). */
  | "INVALID_ARGUMENT"
  /** The browser refused the write for lack of space; nothing was written. */
  | "QUOTA_EXCEEDED"
  /** The store was closed (by the app, or because another tab upgraded the database). */
  | "CLOSED"
  /** The data was written by a newer version of annals. */
  | "FORMAT_TOO_NEW"
  /** Stored bytes could not be decoded. */
  | "CORRUPT"
  /** The storage backend failed for another reason. */
  | "STORAGE"
  /** An aggregate's `decide` refused the command (the message is the app's); nothing was written. */
  | "COMMAND_REJECTED"
  /** A process manager's handler (or one of its commands) failed; it is retried. See {@link ReactorError}. */
  | "REACTOR_FAILED"
  /** Sync: the server could not be reached (or no tab that syncs this store answered). */
  | "OFFLINE"
  /** Sync: the server refused the token (401). */
  | "UNAUTHORIZED"
  /** Sync: the token does not grant this store (403). */
  | "FORBIDDEN"
  /** Sync: the server refused the request as malformed or too large (another 4xx). */
  | "REFUSED"
  /** Sync: the server failed (5xx) or answered outside the protocol. */
  | "SERVER";

const CODES: ReadonlySet<string> = new Set<AnnalsErrorCode>([
  "WRONG_EXPECTED_VERSION",
  "INVALID_EVENT",
  "INVALID_ARGUMENT",
  "QUOTA_EXCEEDED",
  "CLOSED",
  "FORMAT_TOO_NEW",
  "CORRUPT",
  "STORAGE",
  "COMMAND_REJECTED",
  "REACTOR_FAILED",
  "OFFLINE",
  "UNAUTHORIZED",
  "FORBIDDEN",
  "REFUSED",
  "SERVER",
]);

/** Extra facts an error may carry (a version conflict carries all three). */
export interface AnnalsErrorDetails {
  stream?: string;
  expectedVersion?: number | "any" | "no_stream" | "exists";
  actualVersion?: number;
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

  constructor(code: AnnalsErrorCode, message: string, details: AnnalsErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.stream !== undefined) this.stream = details.stream;
    if (details.expectedVersion !== undefined) this.expectedVersion = details.expectedVersion;
    if (details.actualVersion !== undefined) this.actualVersion = details.actualVersion;
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
    };
    const details: AnnalsErrorDetails = {};
    if (typeof e.stream === "string") details.stream = e.stream;
    if (e.expectedVersion !== undefined) details.expectedVersion = e.expectedVersion;
    if (typeof e.actualVersion === "number") details.actualVersion = e.actualVersion;
    return new AnnalsError(e.code, e.message, details);
  }
  return error;
}

/** What `on("error")` reports when a process manager's handler or one of its commands fails. */
export class ReactorError extends AnnalsError {
  /** The reactor's `name`. */
  readonly reactor: string;
  /** The event being handled (it is handled again after `retryInMs`). */
  readonly event: unknown;
  /** 1 for the first failure on this event. */
  readonly attempt: number;
  /** When the handler runs again (ms); -1 when it will not (the store closed). */
  readonly retryInMs: number;

  constructor(reactor: string, event: unknown, attempt: number, retryInMs: number, cause: unknown) {
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
