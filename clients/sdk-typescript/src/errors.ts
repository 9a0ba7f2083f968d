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

  /** The platform's `{"error": {"code", "message"}}`, or the text of whatever answered. */
  static fromAnswer(status: number, text: string): TrackerError {
    let code = `http_${status}`;
    let message = text.slice(0, 500);
    try {
      const problem = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
      code = problem?.code ?? code;
      message = problem?.message ?? message;
    } catch {
      // not the platform's JSON error: keep the text
    }
    return new TrackerError(code, message, status);
  }
}
