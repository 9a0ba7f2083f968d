// "Are you sure?" for destructive actions, as a promise: `if (await confirmAction({...})) ...`. One dialog for
// the whole app (rendered by ConfirmHost in the shell) instead of one per table row.

export interface ConfirmRequest {
  title: string;
  message: string;
  confirmLabel: string;
  danger?: boolean;
}

export const pending = $state<{ request: ConfirmRequest | null; resolve: ((ok: boolean) => void) | null }>({
  request: null,
  resolve: null,
});

export function confirmAction(request: ConfirmRequest): Promise<boolean> {
  pending.resolve?.(false);
  return new Promise((resolve) => {
    pending.request = request;
    pending.resolve = resolve;
  });
}

export function answer(ok: boolean): void {
  const resolve = pending.resolve;
  pending.request = null;
  pending.resolve = null;
  resolve?.(ok);
}
