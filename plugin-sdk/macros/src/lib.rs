//! The `#[plugin]` attribute of `wasmgate-sdk`: it keeps a plugin's `impl Plugin for T` as
//! written and adds the component's exports, declaring exactly the phase methods the impl
//! defines. Use it as `wasmgate_sdk::plugin`; this crate is an implementation detail.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{ImplItem, Item, ItemImpl};

/// Exports an `impl Plugin for YourType { .. }` as the component's `handler`.
///
/// The impl is kept as written. The attribute adds the component exports, and `init` reports
/// exactly the phase methods the impl defines, so the host never calls the others. Use it once
/// per plugin crate, on a concrete (non-generic) type.
///
/// ```
/// use wasmgate_sdk::{Action, NoConfig, Plugin, Request};
///
/// struct Stamp;
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for Stamp {
///     type Config = NoConfig;
///
///     fn new(_config: NoConfig) -> Result<Self, String> {
///         Ok(Stamp)
///     }
///
///     fn on_upstream_request(&mut self, req: &mut Request) -> Action {
///         let _ = req.set_header("x-via-gateway", "1");
///         Action::Continue
///     }
/// }
/// ```
///
/// Anything but an `impl Plugin for T` is refused at compile time:
///
/// ```compile_fail
/// #[wasmgate_sdk::plugin]
/// struct NotAnImpl;
/// ```
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(args.into(), item.into()).into()
}

/// The phase methods of `Plugin`, with the WIT `phases` flag each one stands for.
const PHASES: [(&str, &str); 9] = [
    ("on_request_headers", "REQUEST_HEADERS"),
    ("on_request_body", "REQUEST_BODY"),
    ("select_upstream", "SELECT_UPSTREAM"),
    ("on_upstream_request", "UPSTREAM_REQUEST"),
    ("on_upstream_error", "UPSTREAM_ERROR"),
    ("on_response_headers", "RESPONSE_HEADERS"),
    ("on_response_body", "RESPONSE_BODY"),
    ("on_response_trailers", "RESPONSE_TRAILERS"),
    ("on_log", "LOG"),
];

const USAGE: &str = "`#[wasmgate_sdk::plugin]` goes on `impl Plugin for YourType { .. }`";

fn expand(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    match export(args, item.clone()) {
        Ok(export) => quote! { #item #export },
        // Keeping the item as written leaves the attribute's error as the only one reported.
        Err(error) => {
            let error = error.to_compile_error();
            quote! { #item #error }
        }
    }
}

/// The tokens that export the impl in `item`, or why `item` cannot be exported.
fn export(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !args.is_empty() {
        return Err(syn::Error::new_spanned(args, "`#[wasmgate_sdk::plugin]` takes no arguments"));
    }
    let item: ItemImpl = match syn::parse2(item)? {
        Item::Impl(item) => item,
        _ => return Err(syn::Error::new(Span::call_site(), USAGE)),
    };
    let Some((negative, trait_path, _)) = &item.trait_ else {
        return Err(syn::Error::new_spanned(&item.self_ty, format!("{USAGE}, not on an inherent impl")));
    };
    let is_plugin = trait_path.segments.last().is_some_and(|s| s.ident == "Plugin");
    if negative.is_some() || !is_plugin {
        return Err(syn::Error::new_spanned(trait_path, format!("{USAGE}, not on an impl of another trait")));
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "a wasmgate plugin type cannot be generic: the component exports one concrete type",
        ));
    }

    let defined: Vec<String> = item
        .items
        .iter()
        .filter_map(|item| match item {
            ImplItem::Fn(method) => Some(method.sig.ident.to_string()),
            _ => None,
        })
        .collect();
    let flags = PHASES
        .iter()
        .filter(|(method, _)| defined.iter().any(|name| name == method))
        .map(|(_, flag)| format_ident!("{flag}"));

    let self_ty = &item.self_ty;
    Ok(quote! {
        ::wasmgate_sdk::__export_plugin!(
            #self_ty,
            ::wasmgate_sdk::__private::Phases::empty()
                #(.union(::wasmgate_sdk::__private::Phases::#flags))*
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(args: TokenStream2, item: TokenStream2) -> String {
        expand(args, item).to_string()
    }

    #[test]
    fn declares_the_phases_the_impl_defines_in_wit_order() {
        let out = expanded(
            TokenStream2::new(),
            quote! {
                impl Plugin for Mine {
                    type Config = NoConfig;
                    fn new(_c: NoConfig) -> Result<Self, String> { Ok(Mine) }
                    fn on_log(&mut self, _r: &Request, _e: &LogEntry) {}
                    fn helper_not_a_phase() {}
                    fn on_request_headers(&mut self, _r: &mut Request) -> Action { Action::Continue }
                }
            },
        );
        let phases = quote! {
            ::wasmgate_sdk::__export_plugin!(
                Mine,
                ::wasmgate_sdk::__private::Phases::empty()
                    .union(::wasmgate_sdk::__private::Phases::REQUEST_HEADERS)
                    .union(::wasmgate_sdk::__private::Phases::LOG)
            );
        }
        .to_string();
        assert!(out.ends_with(&phases), "{out}");
        // The impl itself comes first, unchanged.
        assert!(out.starts_with("impl Plugin for Mine"), "{out}");
    }

    #[test]
    fn an_impl_without_phases_declares_none() {
        let out = expanded(
            TokenStream2::new(),
            quote! {
                impl wasmgate_sdk::Plugin for some::path::Mine {
                    type Config = NoConfig;
                    fn new(_c: NoConfig) -> Result<Self, String> { Ok(Mine) }
                }
            },
        );
        let phases = quote! {
            ::wasmgate_sdk::__export_plugin!(
                some::path::Mine,
                ::wasmgate_sdk::__private::Phases::empty()
            );
        }
        .to_string();
        assert!(out.ends_with(&phases), "{out}");
    }

    fn error_of(args: TokenStream2, item: TokenStream2) -> String {
        export(args, item).expect_err("the item must be refused").to_string()
    }

    #[test]
    fn refuses_what_is_not_an_impl_of_plugin() {
        assert_eq!(error_of(TokenStream2::new(), quote! { struct Mine; }), USAGE);
        assert_eq!(
            error_of(TokenStream2::new(), quote! { impl Mine { fn on_log(&mut self) {} } }),
            format!("{USAGE}, not on an inherent impl")
        );
        assert_eq!(
            error_of(TokenStream2::new(), quote! { impl Default for Mine {} }),
            format!("{USAGE}, not on an impl of another trait")
        );
        assert_eq!(
            error_of(TokenStream2::new(), quote! { impl !Plugin for Mine {} }),
            format!("{USAGE}, not on an impl of another trait")
        );
    }

    #[test]
    fn refuses_generics_and_arguments() {
        assert!(
            error_of(TokenStream2::new(), quote! { impl<T> Plugin for Mine<T> {} })
                .starts_with("a wasmgate plugin type cannot be generic")
        );
        assert_eq!(
            error_of(quote! { phases = "all" }, quote! { impl Plugin for Mine {} }),
            "`#[wasmgate_sdk::plugin]` takes no arguments"
        );
    }

    #[test]
    fn keeps_the_item_next_to_the_error() {
        let out = expanded(TokenStream2::new(), quote! { struct Mine; });
        assert!(out.starts_with("struct Mine ;"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
    }
}
