//! Clicks, pixels and beacons share queue messages. Cloudflare Queues bill every message three operations (write,
//! read, delete), four times the price of the Worker request itself, so an isolate holds the events it takes for
//! `COALESCE_MS` and sends them in one message (docs/cost.md has the arithmetic).
//!
//! The answer never waits: the first event of a window starts a timer inside its own request's `waitUntil`, later
//! events join the window's message, and the timer's send carries them all. A message that fills up goes at once,
//! from the request whose event did not fit. An event waits in the isolate's memory for at most `COALESCE_MS`
//! before its send starts, where it used to wait only for its own send; every send keeps the fallback of
//! [`super::queue::send_guarded`] (straight to the core, else logged in full). Postbacks and `/batch` are
//! acknowledged once the queue has them, and never wait here.

use std::cell::RefCell;

use tracker_protocol::Event;
use worker::js_sys::{Function, Promise, Reflect};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast as _, JsValue};
use worker::{Context, Env, console_error};

use super::queue::{EVENTS_QUEUE, send_guarded};
use crate::pack::Messages;

/// The events taken since the window opened, and the queue binding they go to.
struct Window {
    messages: Messages<'static>,
    queue: Option<JsValue>,
}

thread_local! {
    static WINDOW: RefCell<Option<Window>> = const { RefCell::new(None) };
}

/// Events in windows this isolate opened and messages it sent for them (the counts the cost model uses).
#[derive(Debug, Clone, Copy)]
pub(super) struct Coalesced {
    events: u64,
    messages: u64,
}

thread_local! {
    static COUNTS: RefCell<Coalesced> = const { RefCell::new(Coalesced { events: 0, messages: 0 }) };
}

impl Coalesced {
    /// This isolate's counts in Prometheus text (each isolate counts its own).
    pub(super) fn prometheus() -> String {
        let c = COUNTS.with(|c| *c.borrow());
        format!(
            "# HELP tracker_edge_coalesced_events_total Clicks, pixels and beacons this isolate queued in windows.\n\
             # TYPE tracker_edge_coalesced_events_total counter\n\
             tracker_edge_coalesced_events_total {}\n\
             # HELP tracker_edge_coalesced_messages_total Queue messages this isolate sent for them.\n\
             # TYPE tracker_edge_coalesced_messages_total counter\n\
             tracker_edge_coalesced_messages_total {}\n",
            c.events, c.messages
        )
    }
}

/// Queues a click's, pixel's or beacon's event without delaying the response: in this isolate's open window (opening
/// one that closes in `window_ms`), or on its own with a window of 0.
pub(super) fn enqueue_soon(env: &Env, ctx: &Context, window_ms: u32, event: Event) {
    if window_ms == 0 {
        return super::queue::enqueue_later(env, ctx, vec![event]);
    }
    enqueue_coalesced(env, ctx, &event, window_ms);
}

fn enqueue_coalesced(env: &Env, ctx: &Context, event: &Event, window_ms: u32) {
    let json = match serde_json::to_string(event) {
        Ok(j) => j,
        Err(e) => return console_error!("UNDELIVERED EVENT (cannot serialise: {e}): {event:?}"),
    };
    let (opened, full, queue) = WINDOW.with(|w| {
        let mut w = w.borrow_mut();
        let opened = w.is_none();
        let window = w.get_or_insert_with(|| Window {
            messages: Messages::new(None),
            queue: env.queue(EVENTS_QUEUE).ok().map(|q| q.as_ref().clone()),
        });
        let full = window.messages.push(&json);
        (opened, full, window.queue.clone())
    });
    COUNTS.with(|c| c.borrow_mut().events += 1);
    if let Some(sent) = full.and_then(|body| send(queue.as_ref(), &body)) {
        // the window's message was full: it goes now, from this request, and the window goes on with this event
        let _ = ctx.as_ref().wait_until(&sent);
    }
    if opened {
        match closing(window_ms) {
            Some(timer) => {
                let _ = ctx.as_ref().wait_until(&timer);
            }
            // no timer (cannot happen in the Workers runtime): send what the window holds now
            None => {
                if let Ok(sent) = close_window(JsValue::UNDEFINED).dyn_into::<Promise>() {
                    let _ = ctx.as_ref().wait_until(&sent);
                }
            }
        }
    }
}

/// Sends one of the windows' messages, counted: the promise to hand to `waitUntil`.
fn send(queue: Option<&JsValue>, body: &str) -> Option<Promise> {
    COUNTS.with(|c| c.borrow_mut().messages += 1);
    send_guarded(queue, &JsValue::from_str(body))
}

/// `new Promise(r => setTimeout(r, ms)).then(closeWindow)`: settles once the window's message is on the queue
/// (or delivered by the fallback).
fn closing(window_ms: u32) -> Option<Promise> {
    thread_local! {
        static SET_TIMEOUT: Option<Function> = Reflect::get(&worker::js_sys::global(), &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into().ok());
        static CLOSE: Function =
            Closure::<dyn FnMut(JsValue) -> JsValue>::new(close_window).into_js_value().unchecked_into();
    }
    let set_timeout = SET_TIMEOUT.with(Clone::clone)?;
    let mut armed = true;
    let timer = Promise::new(&mut |resolve, _reject| {
        armed = set_timeout.call2(&JsValue::NULL, &resolve, &JsValue::from(window_ms)).is_ok();
    });
    if !armed {
        return None;
    }
    let then: Function = Reflect::get(&timer, &JsValue::from_str("then")).ok()?.dyn_into().ok()?;
    CLOSE.with(|close| then.call1(&timer, close)).ok()?.dyn_into().ok()
}

/// Sends the window's message; returns the send's promise (undefined if the window held nothing).
fn close_window(_: JsValue) -> JsValue {
    let Some(mut window) = WINDOW.with(|w| w.borrow_mut().take()) else { return JsValue::UNDEFINED };
    let Some(body) = window.messages.finish() else { return JsValue::UNDEFINED };
    send(window.queue.as_ref(), &body).map_or(JsValue::UNDEFINED, JsValue::from)
}
