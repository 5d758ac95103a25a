//! `#[leakhound_probe::main]` and `#[leakhound_probe::test]`: drop-in replacements for
//! `#[tokio::main]` and `#[tokio::test]` that build the runtime with the probe's task hooks
//! and start the probe. Use them through `leakhound-probe`, which re-exports them.
//!
//! Arguments, as tokio's: `flavor = "multi_thread" | "current_thread"`, `worker_threads = N`
//! (multi-thread only), `start_paused = true` (current-thread only, needs tokio's
//! `test-util`). The probe's own:
//! - `max_blocking_threads = N`: set on the runtime and told to the probe (tokio does not
//!   report it), so blocking-pool starvation is judged against the real limit;
//! - `log_ids = true | false`: install a fmt subscriber with `tid=… task=…` on every line
//!   (honouring `RUST_LOG`) when the program has none. Default: on, unless the function body
//!   names something with `subscriber` in it (the program sets up its own; installing one
//!   first would make its `init()` panic);
//! - `task_names = true | false`: whether that subscriber also reads names given with
//!   `tokio::task::Builder::name` from tokio's tracing span (default: `LEAKHOUND_TASK_NAMES`,
//!   else the probe's default; see docs/RUST.md for its cost);
//! - `leaks = "tasks" | "all" | "off"` (test only): what the `LeakGuard` around the body
//!   judges. `tasks` (default) checks the test's own runtime, which stays exact when tests
//!   run in parallel; `all` also checks the process's threads, descriptors and children,
//!   which only makes sense with `--test-threads=1`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token};

/// `#[tokio::main]` with the probe: task hooks on the runtime and the probe started.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into(), Kind::Main)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// `#[tokio::test]` with the probe; the test fails when tasks it spawned are still alive
/// when its body returns (see the crate docs for `leaks`).
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into(), Kind::Test)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Main,
    Test,
}

struct Config {
    multi_thread: bool,
    worker_threads: Option<(Expr, Span)>,
    start_paused: Option<(bool, Span)>,
    log_ids: Option<bool>,
    task_names: Option<bool>,
    max_blocking_threads: Option<Expr>,
    leaks: String,
}

fn lit_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn lit_bool(e: &Expr) -> Option<bool> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Some(b.value),
        _ => None,
    }
}

fn parse_config(args: Tokens, kind: Kind) -> syn::Result<Config> {
    let list = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    let mut c = Config {
        multi_thread: kind == Kind::Main,
        worker_threads: None,
        start_paused: None,
        log_ids: None,
        task_names: None,
        max_blocking_threads: None,
        leaks: "tasks".into(),
    };
    let err = |e: &dyn ToTokens, msg: &str| syn::Error::new_spanned(e, msg);
    for nv in list {
        let name = nv
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let v = &nv.value;
        match name.as_str() {
            "flavor" => match lit_str(v).as_deref() {
                Some("multi_thread") => c.multi_thread = true,
                Some("current_thread") => c.multi_thread = false,
                _ => {
                    return Err(err(
                        v,
                        "flavor must be \"multi_thread\" or \"current_thread\"",
                    ));
                }
            },
            "max_blocking_threads" => c.max_blocking_threads = Some(v.clone()),
            "worker_threads" => c.worker_threads = Some((v.clone(), Span::call_site())),
            "start_paused" => {
                let b = lit_bool(v).ok_or_else(|| err(v, "start_paused must be true or false"))?;
                c.start_paused = Some((b, Span::call_site()));
            }
            "log_ids" => {
                c.log_ids =
                    Some(lit_bool(v).ok_or_else(|| err(v, "log_ids must be true or false"))?)
            }
            "task_names" => {
                c.task_names =
                    Some(lit_bool(v).ok_or_else(|| err(v, "task_names must be true or false"))?)
            }
            "leaks" if kind == Kind::Test => match lit_str(v).as_deref() {
                Some(l @ ("tasks" | "all" | "off")) => c.leaks = l.into(),
                _ => return Err(err(v, "leaks must be \"tasks\", \"all\" or \"off\"")),
            },
            _ => {
                let known = if kind == Kind::Test {
                    "flavor, worker_threads, start_paused, max_blocking_threads, log_ids, task_names, leaks"
                } else {
                    "flavor, worker_threads, start_paused, max_blocking_threads, log_ids, task_names"
                };
                return Err(err(
                    &nv.path,
                    &format!("unknown argument `{name}`; expected one of: {known}"),
                ));
            }
        }
    }
    if c.multi_thread && c.start_paused.is_some() {
        return Err(syn::Error::new(
            Span::call_site(),
            "start_paused needs flavor = \"current_thread\"",
        ));
    }
    if !c.multi_thread && c.worker_threads.is_some() {
        return Err(syn::Error::new(
            Span::call_site(),
            "worker_threads needs flavor = \"multi_thread\"",
        ));
    }
    Ok(c)
}

/// Whether the body mentions a tracing subscriber (`tracing_subscriber::…`,
/// `set_global_default`, `console_subscriber`, …): then the program sets its own up.
fn mentions_subscriber(tokens: Tokens) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => {
            let s = i.to_string();
            s.contains("subscriber") || s == "set_global_default"
        }
        TokenTree::Group(g) => mentions_subscriber(g.stream()),
        _ => false,
    })
}

fn expand(args: Tokens, item: Tokens, kind: Kind) -> syn::Result<Tokens> {
    let config = parse_config(args, kind)?;
    let mut f: ItemFn = syn::parse2(item)?;
    if f.sig.asyncness.take().is_none() {
        return Err(syn::Error::new_spanned(
            f.sig.fn_token,
            "the function must be `async fn`",
        ));
    }
    if kind == Kind::Test && !f.sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &f.sig.inputs,
            "a test function cannot take arguments",
        ));
    }
    let block = &f.block;
    let output = match &f.sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => t.to_token_stream(),
    };
    let log_ids = config
        .log_ids
        .unwrap_or_else(|| !mentions_subscriber(block.to_token_stream()));
    let multi = config.multi_thread;
    let mut calls = Vec::new();
    if let Some((n, span)) = &config.worker_threads {
        calls.push(quote_spanned!(*span=> __lh_builder.worker_threads(#n);));
    }
    if let Some((b, span)) = config.start_paused {
        calls.push(quote_spanned!(span=> __lh_builder.start_paused(#b);));
    }
    let max_blocking = match &config.max_blocking_threads {
        Some(n) => {
            calls.push(quote!(__lh_builder.max_blocking_threads(#n);));
            quote!(#n)
        }
        None => quote!(512),
    };
    let mut probe =
        quote!(::leakhound_probe::builder().log_ids(#log_ids).max_blocking_threads(#max_blocking));
    if let Some(on) = config.task_names {
        probe = quote!(#probe.task_names(#on));
    }
    let run = match kind {
        Kind::Main => quote!(::leakhound_probe::__private::main(__lh_builder, #probe, __lh_body)),
        Kind::Test => {
            let leaks = &config.leaks;
            quote!(::leakhound_probe::__private::test(__lh_builder, #probe, #leaks, __lh_body))
        }
    };
    let test_attr = (kind == Kind::Test).then(|| quote!(#[::core::prelude::v1::test]));
    let attrs = &f.attrs;
    let vis = &f.vis;
    let sig = &f.sig;
    Ok(quote! {
        #test_attr
        #(#attrs)*
        #vis #sig {
            let __lh_body = async move #block;
            // Names the body's output type, so `?` inside it infers like in any fn.
            let __lh_body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output>> =
                ::core::pin::pin!(__lh_body);
            let mut __lh_builder = ::leakhound_probe::__private::builder(#multi);
            #(#calls)*
            #run
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, item: &str, kind: Kind) -> Result<String, String> {
        expand(args.parse().unwrap(), item.parse().unwrap(), kind)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[::core::prelude::v1::test]
    fn arguments_reach_the_builder() {
        let out = expand_str(
            "flavor = \"multi_thread\", worker_threads = 3",
            "async fn main() {}",
            Kind::Main,
        )
        .unwrap();
        assert!(out.contains("builder (true)"), "{out}");
        assert!(out.contains("worker_threads (3)"), "{out}");
        let out = expand_str("start_paused = true", "async fn t() {}", Kind::Test).unwrap();
        assert!(out.contains("builder (false)"), "{out}");
        assert!(out.contains("start_paused (true)"), "{out}");
        assert!(out.contains("\"tasks\""), "{out}");
        assert!(!out.contains("task_names"), "{out}");
        let out = expand_str("task_names = false", "async fn main() {}", Kind::Main).unwrap();
        assert!(out.contains("task_names (false)"), "{out}");
    }

    #[::core::prelude::v1::test]
    fn a_body_that_sets_a_subscriber_gets_none_installed() {
        let own = expand_str(
            "",
            "async fn main() { tracing_subscriber::fmt().init(); }",
            Kind::Main,
        )
        .unwrap();
        assert!(own.contains("log_ids (false)"), "{own}");
        let none = expand_str("", "async fn main() { work().await }", Kind::Main).unwrap();
        assert!(none.contains("log_ids (true)"), "{none}");
    }

    #[::core::prelude::v1::test]
    fn bad_arguments_are_one_clear_error() {
        for (args, item, kind, want) in [
            (
                "flavor = \"fast\"",
                "async fn main() {}",
                Kind::Main,
                "flavor must be",
            ),
            (
                "workers = 2",
                "async fn main() {}",
                Kind::Main,
                "unknown argument `workers`",
            ),
            ("", "fn main() {}", Kind::Main, "must be `async fn`"),
            (
                "",
                "async fn t(x: u8) {}",
                Kind::Test,
                "cannot take arguments",
            ),
            (
                "start_paused = true",
                "async fn main() {}",
                Kind::Main,
                "needs flavor",
            ),
            (
                "task_names = 1",
                "async fn main() {}",
                Kind::Main,
                "task_names must be true or false",
            ),
            (
                "leaks = \"some\"",
                "async fn t() {}",
                Kind::Test,
                "leaks must be",
            ),
            (
                "leaks = \"all\"",
                "async fn main() {}",
                Kind::Main,
                "unknown argument `leaks`",
            ),
        ] {
            let e = expand_str(args, item, kind).unwrap_err();
            assert!(e.contains(want), "{args}: {e}");
        }
    }
}
