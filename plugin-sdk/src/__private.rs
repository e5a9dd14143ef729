//! What the `#[plugin]` expansion needs, and nothing a plugin author should name: the WIT
//! bindings, the instance slot, and [`Handler`], which turns the component's export calls into
//! [`Plugin`] calls. Not part of the API; it changes whenever the glue does.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::thread::LocalKey;

use crate::{
    Action, BodyAction, ErrorAction, LocalResponse, Plugin, Request, Response, RouteConfig, Trailers,
    Upstream, UpstreamChoice,
};

pub mod bindings {
    //! The WIT bindings, generated here from the repository's `wit/` and nowhere else.
    //!
    //! `pub_export_macro` lets the plugin crate expand the `export!` macro; on targets other
    //! than wasm32 the imports are stubs that panic, so the SDK still builds and tests natively.
    wit_bindgen::generate!({
        world: "plugin-with-routes",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "::wasmgate_sdk::__private::bindings",
    });
}

pub use bindings::exports::wasmgate::plugin::handler::Guest;
pub use bindings::exports::wasmgate::plugin::routes::Guest as RoutesGuest;
pub use bindings::wasmgate::plugin::types as wit;
pub use wit::Phases;

/// Where a plugin type's one instance lives: a thread-local, because guests are
/// single-threaded and a plugin need not be `Send`.
pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

/// Implemented by the `#[plugin]` expansion for the plugin type.
pub trait Exported: Plugin {
    /// The phases the impl defines: what `init` reports to the host.
    const PHASES: Phases;

    /// The instance `init` built, if it has run.
    fn slot() -> &'static Slot<Self>;
}

/// The component's `handler` and `routes` exports for plugin `P`, named by the `export!` call the
/// `#[plugin]` expansion makes.
pub struct Handler<P>(PhantomData<P>);

impl<P: Exported> Handler<P> {
    /// Runs `phase` on the instance, or returns `None` if `init` has not built one: a phase
    /// called too early then does nothing instead of failing.
    fn with<R>(phase: impl FnOnce(&mut P) -> R) -> Option<R> {
        // No re-entrance is possible (the component model forbids a host import from calling
        // back into the instance), so this borrow never meets another.
        P::slot().with_borrow_mut(|slot| slot.as_mut().map(phase))
    }
}

impl<P: Exported> Guest for Handler<P> {
    fn init(config: String) -> Result<Phases, String> {
        // A refused config leaves no instance behind: phases then do nothing.
        P::slot().set(None);
        let config = crate::config::parse::<P::Config>(&config)?;
        let instance = P::new(config)?;
        P::slot().set(Some(instance));
        Ok(P::PHASES)
    }

    fn on_request_headers() -> wit::Action {
        Self::with(|plugin| plugin.on_request_headers(&mut Request::handle()))
            .map_or(wit::Action::Continue, Into::into)
    }

    fn on_request_body(chunk: Vec<u8>, end: bool) -> wit::BodyAction {
        Self::with(|plugin| plugin.on_request_body(&mut Request::handle(), chunk, end))
            .map_or(wit::BodyAction::Continue, Into::into)
    }

    fn select_upstream() -> wit::UpstreamChoice {
        Self::with(|plugin| plugin.select_upstream(&Request::handle(), &Upstream::handle()))
            .map_or(wit::UpstreamChoice::Default, Into::into)
    }

    fn on_upstream_request() -> wit::Action {
        Self::with(|plugin| plugin.on_upstream_request(&mut Request::handle()))
            .map_or(wit::Action::Continue, Into::into)
    }

    fn on_upstream_error(failure: wit::UpstreamFailure) -> wit::ErrorAction {
        let failure = failure.into();
        Self::with(|plugin| plugin.on_upstream_error(&Request::handle(), &failure))
            .map_or(wit::ErrorAction::Default, Into::into)
    }

    fn on_response_headers() -> wit::Action {
        Self::with(|plugin| plugin.on_response_headers(&Request::handle(), &mut Response::handle()))
            .map_or(wit::Action::Continue, Into::into)
    }

    fn on_response_body(chunk: Vec<u8>, end: bool) -> wit::BodyAction {
        Self::with(|plugin| plugin.on_response_body(&Request::handle(), chunk, end))
            .map_or(wit::BodyAction::Continue, Into::into)
    }

    fn on_response_trailers() {
        Self::with(|plugin| plugin.on_response_trailers(&mut Trailers::handle()));
    }

    fn on_log(entry: wit::LogEntry) {
        let entry = entry.into();
        Self::with(|plugin| plugin.on_log(&Request::handle(), &entry));
    }
}

impl<P: Exported> RoutesGuest for Handler<P> {
    fn init_route(route: String, config: String) -> Result<(), String> {
        Self::with(|plugin| plugin.init_route(&route, RouteConfig::new(config)))
            .unwrap_or_else(|| Err("no instance: `init` refused the plugin config".to_owned()))
    }
}

/// Exports plugin type `$plugin`, whose impl defines the phases `$phases`: the expansion of
/// `#[plugin]` after the impl itself.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty, $phases:expr) => {
        const _: () = {
            impl $crate::__private::Exported for $plugin {
                const PHASES: $crate::__private::Phases = $phases;

                fn slot() -> &'static $crate::__private::Slot<Self> {
                    ::std::thread_local! {
                        static INSTANCE: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                            const { ::core::cell::RefCell::new(::core::option::Option::None) };
                    }
                    &INSTANCE
                }
            }

            // Only a wasm component has exports to define; natively (tests, docs, `cargo
            // check` of a whole workspace) several plugins may share one binary, and their
            // export symbols would clash.
            #[cfg(target_arch = "wasm32")]
            const _: () = {
                type WasmgateHandler = $crate::__private::Handler<$plugin>;
                $crate::__private::bindings::export!(
                    WasmgateHandler with_types_in $crate::__private::bindings
                );
            };
        };
    };
}

impl From<LocalResponse> for wit::LocalResponse {
    fn from(resp: LocalResponse) -> Self {
        Self {
            status: resp.status,
            headers: resp.headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
            body: resp.body,
        }
    }
}

impl From<Action> for wit::Action {
    fn from(action: Action) -> Self {
        match action {
            Action::Continue => Self::Continue,
            Action::Respond(resp) => Self::Respond(resp.into()),
        }
    }
}

impl From<UpstreamChoice> for wit::UpstreamChoice {
    fn from(choice: UpstreamChoice) -> Self {
        match choice {
            UpstreamChoice::Default => Self::Default,
            UpstreamChoice::Backend(index) => Self::Backend(index),
            UpstreamChoice::Group(group) => Self::Group(group),
            UpstreamChoice::GroupBackend(group, index) => Self::GroupBackend((group, index)),
            UpstreamChoice::HashKey(key) => Self::HashKey(key),
            UpstreamChoice::Respond(resp) => Self::Respond(resp.into()),
        }
    }
}

impl From<BodyAction> for wit::BodyAction {
    fn from(action: BodyAction) -> Self {
        match action {
            BodyAction::Continue => Self::Continue,
            BodyAction::Replace(chunk) => Self::Replace(chunk),
            BodyAction::Respond(resp) => Self::Respond(resp.into()),
        }
    }
}

impl From<ErrorAction> for wit::ErrorAction {
    fn from(action: ErrorAction) -> Self {
        match action {
            ErrorAction::Default => Self::Default,
            ErrorAction::Retry => Self::Retry,
            ErrorAction::Respond(resp) => Self::Respond(resp.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The glue natively: the test plugins touch no host import, whose native stubs panic.

    use serde::Deserialize;

    use super::*;
    use crate::{FailureKind, LogEntry, NoConfig, UpstreamFailure};

    /// Defines no phase at all.
    struct Bare;

    #[crate::plugin]
    impl Plugin for Bare {
        type Config = NoConfig;

        fn new(_config: NoConfig) -> Result<Self, String> {
            Ok(Bare)
        }
    }

    /// Defines some phases, answers locally and counts its calls.
    struct Counting {
        calls: u32,
        status: u16,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CountingConfig {
        status: u16,
    }

    #[crate::plugin]
    impl Plugin for Counting {
        type Config = CountingConfig;

        fn new(config: CountingConfig) -> Result<Self, String> {
            if config.status == 0 {
                return Err("`status` must not be 0".to_owned());
            }
            Ok(Counting { calls: 0, status: config.status })
        }

        fn on_request_headers(&mut self, _req: &mut Request) -> Action {
            self.calls += 1;
            Action::Respond(
                LocalResponse::new(self.status).header("x-calls", self.calls.to_string()).body("counted"),
            )
        }

        fn select_upstream(&mut self, _req: &Request, _upstream: &Upstream) -> UpstreamChoice {
            UpstreamChoice::GroupBackend("canary".to_owned(), self.calls)
        }

        fn on_upstream_error(&mut self, _req: &Request, failure: &UpstreamFailure) -> ErrorAction {
            if failure.kind == FailureKind::ConnectRefused && failure.attempt < 3 {
                ErrorAction::Retry
            } else {
                ErrorAction::Default
            }
        }

        fn on_log(&mut self, _req: &Request, entry: &LogEntry) {
            self.calls += u32::from(entry.status);
        }
    }

    /// Defines every phase.
    struct Everything;

    #[crate::plugin]
    impl Plugin for Everything {
        type Config = NoConfig;

        fn new(_config: NoConfig) -> Result<Self, String> {
            Ok(Everything)
        }
        fn on_request_headers(&mut self, _req: &mut Request) -> Action {
            Action::Continue
        }
        fn on_request_body(&mut self, _req: &mut Request, chunk: Vec<u8>, _end: bool) -> BodyAction {
            BodyAction::Replace(chunk.to_ascii_uppercase())
        }
        fn select_upstream(&mut self, _req: &Request, _upstream: &Upstream) -> UpstreamChoice {
            UpstreamChoice::Default
        }
        fn on_upstream_request(&mut self, _req: &mut Request) -> Action {
            Action::Continue
        }
        fn on_upstream_error(&mut self, _req: &Request, _failure: &UpstreamFailure) -> ErrorAction {
            ErrorAction::Default
        }
        fn on_response_headers(&mut self, _req: &Request, _resp: &mut Response) -> Action {
            Action::Continue
        }
        fn on_response_body(&mut self, _req: &Request, _chunk: Vec<u8>, end: bool) -> BodyAction {
            if end { BodyAction::Respond(LocalResponse::new(500)) } else { BodyAction::Continue }
        }
        fn on_response_trailers(&mut self, _trailers: &mut Trailers) {}
        fn on_log(&mut self, _req: &Request, _entry: &LogEntry) {}
    }

    fn failure(kind: wit::FailureKind, attempt: u32) -> wit::UpstreamFailure {
        wit::UpstreamFailure {
            kind,
            backend: "127.0.0.1:1".to_owned(),
            attempt,
            message: "refused".to_owned(),
        }
    }

    #[test]
    fn phases_are_the_methods_the_impl_defines() {
        assert_eq!(<Bare as Exported>::PHASES, Phases::empty());
        assert_eq!(
            <Counting as Exported>::PHASES,
            Phases::REQUEST_HEADERS | Phases::SELECT_UPSTREAM | Phases::UPSTREAM_ERROR | Phases::LOG
        );
        assert_eq!(<Everything as Exported>::PHASES, Phases::all());
    }

    #[test]
    fn init_returns_the_phases() {
        assert_eq!(
            Handler::<Counting>::init(r#"{"status": 418}"#.to_owned()),
            Ok(Phases::REQUEST_HEADERS | Phases::SELECT_UPSTREAM | Phases::UPSTREAM_ERROR | Phases::LOG)
        );
        assert_eq!(Handler::<Bare>::init(r#"{"anything": [1, 2]}"#.to_owned()), Ok(Phases::empty()));
    }

    #[test]
    fn init_reports_a_bad_config_with_its_position() {
        assert_eq!(
            Handler::<Counting>::init(r#"{"status": "teapot"}"#.to_owned()),
            Err("invalid config: invalid type: string \"teapot\", expected u16 at line 1 column 19"
                .to_owned())
        );
        assert_eq!(
            Handler::<Counting>::init(r#"{"status": 200, "extra": 1}"#.to_owned()),
            Err("invalid config: unknown field `extra`, expected `status` at line 1 column 23".to_owned())
        );
    }

    #[test]
    fn init_returns_the_constructors_error_as_is() {
        assert_eq!(
            Handler::<Counting>::init(r#"{"status": 0}"#.to_owned()),
            Err("`status` must not be 0".to_owned())
        );
    }

    #[test]
    fn phases_before_init_do_nothing() {
        assert!(matches!(Handler::<Counting>::on_request_headers(), wit::Action::Continue));
        assert!(matches!(Handler::<Counting>::select_upstream(), wit::UpstreamChoice::Default));
        assert!(matches!(
            Handler::<Counting>::on_upstream_error(failure(wit::FailureKind::ConnectRefused, 1)),
            wit::ErrorAction::Default
        ));
        assert!(matches!(
            Handler::<Everything>::on_request_body(b"abc".to_vec(), false),
            wit::BodyAction::Continue
        ));
        Handler::<Everything>::on_response_trailers();
    }

    #[test]
    fn a_refused_config_drops_the_previous_instance() {
        assert!(Handler::<Counting>::init(r#"{"status": 200}"#.to_owned()).is_ok());
        assert!(Handler::<Counting>::init(r#"{"status": 0}"#.to_owned()).is_err());
        assert!(matches!(Handler::<Counting>::on_request_headers(), wit::Action::Continue));
    }

    #[test]
    fn phases_reach_the_instance_and_convert_their_results() {
        assert!(Handler::<Counting>::init(r#"{"status": 418}"#.to_owned()).is_ok());

        let first = Handler::<Counting>::on_request_headers();
        let wit::Action::Respond(resp) = first else {
            panic!("expected a local response, got {first:?}");
        };
        assert_eq!(resp.status, 418);
        assert_eq!(resp.headers.len(), 1);
        assert_eq!(resp.headers[0].name, "x-calls");
        assert_eq!(resp.headers[0].value, b"1");
        assert_eq!(resp.body, b"counted");

        // The instance persists between calls.
        let second = Handler::<Counting>::on_request_headers();
        let wit::Action::Respond(resp) = second else {
            panic!("expected a local response, got {second:?}");
        };
        assert_eq!(resp.headers[0].value, b"2");

        let choice = Handler::<Counting>::select_upstream();
        assert!(
            matches!(&choice, wit::UpstreamChoice::GroupBackend((group, 2)) if group == "canary"),
            "{choice:?}"
        );
        assert!(matches!(
            Handler::<Counting>::on_upstream_error(failure(wit::FailureKind::ConnectRefused, 1)),
            wit::ErrorAction::Retry
        ));
        assert!(matches!(
            Handler::<Counting>::on_upstream_error(failure(wit::FailureKind::Reset, 1)),
            wit::ErrorAction::Default
        ));

        Handler::<Counting>::on_log(wit::LogEntry {
            status: 100,
            duration_us: 1,
            upstream_us: None,
            bytes_in: 0,
            bytes_out: 0,
            backend: None,
            error: None,
        });
        let choice = Handler::<Counting>::select_upstream();
        assert!(matches!(&choice, wit::UpstreamChoice::GroupBackend((_, 102))), "{choice:?}");
    }

    #[test]
    fn body_actions_convert() {
        assert!(Handler::<Everything>::init("{}".to_owned()).is_ok());
        let replaced = Handler::<Everything>::on_request_body(b"abc".to_vec(), false);
        assert!(matches!(&replaced, wit::BodyAction::Replace(chunk) if chunk == b"ABC"), "{replaced:?}");
        let respond = Handler::<Everything>::on_response_body(Vec::new(), true);
        assert!(matches!(&respond, wit::BodyAction::Respond(resp) if resp.status == 500), "{respond:?}");
    }
}
