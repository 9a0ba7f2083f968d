export { TrackerError } from './errors.js';
export {
  type LinkKey,
  type LinkKind,
  type LinkOptions,
  type Params,
  RESERVED_PARAMS,
  clickUrl,
  encryptedClickUrl,
  openPostbackUrl,
  pixelUrl,
  postbackUrl,
  shortLinkUrl,
  signedLink,
  v1EncryptedUrl,
  v1ShortUrl,
  v1SignedUrl,
  v1Signature,
  v2Message,
} from './links.js';
export {
  DELIVERY_ID_HEADER,
  EVENT_HEADER,
  SIGNATURE_HEADER,
  type VerifyOptions,
  signWebhook,
  verifyWebhook,
} from './webhook.js';
export {
  type BatchAnswer,
  type ClientOptions,
  type Rejected,
  type TrackEvent,
  type TrackableEvent,
  TrackerClient,
  retryAfterMs,
} from './client.js';
export { uuidv7 } from './crypto.js';
export {
  type TrackInput,
  type TrackerConfig,
  type TrackingEvent,
  buildEncryptedClickUrl,
  buildImpressionUrl,
  buildPostbackUrl,
  buildSignedClickUrl,
  buildTrackedClickUrl,
  decryptUrl,
  encryptUrl,
  signHmac,
  verifyHmac,
} from './compat.js';
export { ApiClient, type ApiClientOptions } from './api.js';
/** The platform API's types, one per schema of its OpenAPI document (`api.LinkView`, `api.Event`, ...). */
export * as api from './api.js';
