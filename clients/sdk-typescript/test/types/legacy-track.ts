// Compile-time checks (compiled, never run, by test/types.test.mjs under the package's strict settings) against the
// built declarations (dist/index.d.ts), which are what users compile against: the replaced SDK's users keep their
// client code as it was, and what neither event shape allows still fails.
import { TrackerClient, type TrackEvent, type TrackInput, type TrackingEvent } from '../../dist/index.js';

// configured and called as the replaced SDK's README shows (its `apiUrl` now ends in /v1/<ingest token>)
const legacy = new TrackerClient({
  apiUrl: 'https://track.example.com/v1/pt_6vct_secret',
  mode: 'signed',
  batchSize: 50,
  flushInterval: 5000,
  onError: (error: Error, events: TrackingEvent[]) => console.error(error.message, events.length),
});
const queued: boolean = legacy.track({
  event_type: 'postback',
  ip: '203.0.113.1',
  user_agent: 'Mozilla/5.0',
  referer: null,
  accept_language: null,
  request_path: '/p',
  request_host: 'track.example.com',
  params: { click_id: 'c1' },
});
const full: TrackingEvent = {
  event_id: '019c4633-5078-7411-8858-4aeafb6298bb',
  event_type: 'purchase',
  timestamp: 1_770_704_294_008,
  ip: '203.0.113.1',
  user_agent: 'Mozilla/5.0',
  referer: 'https://shop.example/',
  accept_language: 'en',
  request_path: '/p',
  request_host: 'track.example.com',
  params: { amount: '9.90' },
};
const { event_id: _id, timestamp: _at, ...rest } = full;
const input: TrackInput = { ...rest, referer: null };
legacy.track(full);
legacy.track(input);
void legacy.destroy();

// this SDK's own shape, unchanged
const client = new TrackerClient({
  baseUrl: 'https://track.example.com',
  token: 'trk_ing_x',
  onDrop: (event) => console.warn('dropped', event.event_type),
});
const event: TrackEvent = { event_type: 'signup', params: { plan: 'pro', seats: 3, trial: true } };
client.track(event);
client.track({ event_type: 'signup', referer: 'https://a.example/' });

// @ts-expect-error an event needs an event_type
client.track({ params: {} });
// @ts-expect-error the replaced shape has string params only, and this SDK's shape has no null referer
client.track({ event_type: 'x', ip: '', user_agent: '', referer: null, accept_language: null, request_path: '/',
  request_host: 'h', params: { n: 1 } });
// @ts-expect-error the replaced shape is whole or not at all: request_host is missing
client.track({ event_type: 'x', ip: '', user_agent: '', referer: null, accept_language: null, request_path: '/',
  params: {} });

export { queued };
