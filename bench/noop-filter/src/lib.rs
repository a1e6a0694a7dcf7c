//! The cheapest possible proxy-wasm HTTP filter: one context per stream, every request
//! continued untouched. `make bench` runs it in the same Envoy layout as the Portcullis
//! filter to separate what Envoy's V8 wasm machinery costs from what the filter's own work
//! costs. Native builds (workspace tests) compile to an empty library.

#[cfg(target_family = "wasm")]
mod wasm {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Pass))
        }
    }

    struct Pass;

    impl Context for Pass {}

    impl HttpContext for Pass {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            Action::Continue
        }
    }
}
