/** A refused input or answer. `code` is the platform's error code where there is one (`reserved_param`, ...). */
export class TrackerError extends Error {
  readonly code: string;
  /** The HTTP status, when the platform answered. */
  readonly status?: number;

  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = 'TrackerError';
    this.code = code;
    if (status !== undefined) this.status = status;
  }
}
