//! Procedural macros of `warden-sdk`.
//!
//! `#[tool]` turns a plain Rust function into a skill tool: it keeps the function as written
//! and adds, in the type namespace under the same name, a zero-sized type implementing
//! `warden_sdk::Tool` (definition with the doc comment as description and schemas derived
//! from the argument and result types, plus a dispatcher that parses the JSON arguments).
//!
//! Invariants: the generated code only names items through `::warden_sdk`, so skill crates
//! need no other dependency; a tool without a doc comment, with more than one argument, or
//! with a name outside `[a-zA-Z0-9_-]{1,48}` is a compile error, not a runtime surprise.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{
    Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Meta, ReturnType, parse_macro_input,
    spanned::Spanned,
};

/// Longest local tool name a skill may declare (the host adds a namespace prefix and the
/// exposed name must stay within 64 characters).
const MAX_TOOL_NAME: usize = 48;

#[derive(Default)]
struct ToolArgs {
    name: Option<LitStr>,
    title: Option<LitStr>,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool,
}

/// Declares a skill tool. See the `warden-sdk` crate documentation for the full guide.
///
/// ```text
/// /// Say hello.
/// #[tool(read_only, idempotent)]
/// fn greet(args: GreetArgs) -> Result<String, ToolError> { Ok(format!("Hello, {}!", args.name)) }
/// ```
///
/// Options: `name = "..."` (defaults to the function name), `title = "..."`, and the flags
/// `read_only`, `destructive`, `idempotent`, `open_world` (MCP annotations).
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut args = ToolArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("title") {
            args.title = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("read_only") {
            args.read_only = true;
        } else if meta.path.is_ident("destructive") {
            args.destructive = true;
        } else if meta.path.is_ident("idempotent") {
            args.idempotent = true;
        } else if meta.path.is_ident("open_world") {
            args.open_world = true;
        } else {
            return Err(meta.error(
                "unknown #[tool] option; expected one of: name, title, read_only, destructive, idempotent, open_world",
            ));
        }
        Ok(())
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    match expand(args, func) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(args: ToolArgs, func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let ident = &func.sig.ident;
    let vis = &func.vis;
    if func.sig.asyncness.is_some() {
        return Err(syn::Error::new(
            func.sig.asyncness.span(),
            "tools are synchronous functions",
        ));
    }
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            func.sig.generics.span(),
            "tools cannot be generic",
        ));
    }
    let name = args
        .name
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| ident.to_string());
    let name_span = args.name.as_ref().map_or(ident.span(), LitStr::span);
    if name.is_empty()
        || name.len() > MAX_TOOL_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(syn::Error::new(
            name_span,
            format!("tool name `{name}` must be 1-{MAX_TOOL_NAME} characters of [a-zA-Z0-9_-]"),
        ));
    }

    let description = doc_text(&func.attrs);
    if description.is_empty() {
        return Err(syn::Error::new(
            ident.span(),
            "add a doc comment to the tool: it becomes the tool's description",
        ));
    }

    let arg_ty = match func.sig.inputs.len() {
        0 => None,
        1 => match &func.sig.inputs[0] {
            FnArg::Typed(pat) => Some((*pat.ty).clone()),
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(r.span(), "tools are free functions"));
            }
        },
        _ => {
            return Err(syn::Error::new(
                func.sig.inputs.span(),
                "a tool takes at most one argument: a struct that derives Deserialize and JsonSchema",
            ));
        }
    };
    let ret_ty = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => {
            return Err(syn::Error::new(
                func.sig.span(),
                "a tool returns Result<T, E> where T: Serialize + JsonSchema and E: Into<ToolError>",
            ));
        }
    };

    let title = match &args.title {
        Some(t) => quote!(::core::option::Option::Some(::std::string::String::from(#t))),
        None => quote!(::core::option::Option::None),
    };
    let flag = |on: bool| {
        if on {
            quote!(::core::option::Option::Some(true))
        } else {
            quote!(::core::option::Option::None)
        }
    };
    let (read_only, destructive, idempotent, open_world) = (
        flag(args.read_only),
        flag(args.destructive),
        flag(args.idempotent),
        flag(args.open_world),
    );
    let (input_schema, invoke) = match &arg_ty {
        Some(ty) => (
            quote!(::warden_sdk::__private::input_schema::<#ty>()),
            quote! {
                let args: #ty = ::warden_sdk::__private::parse_arguments(arguments)?;
                #ident(args)
            },
        ),
        None => (
            quote!(::warden_sdk::__private::empty_input_schema()),
            quote! {
                ::warden_sdk::__private::parse_no_arguments(arguments)?;
                #ident()
            },
        ),
    };
    let description = LitStr::new(&description, Span::call_site());
    let name = LitStr::new(&name, name_span);

    Ok(quote! {
        #func

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #ident {}

        impl ::warden_sdk::Tool for #ident {
            const NAME: &'static str = #name;

            fn definition() -> ::warden_sdk::ToolDef {
                ::warden_sdk::ToolDef {
                    name: ::std::string::String::from(#name),
                    description: ::std::string::String::from(#description),
                    input_schema: #input_schema,
                    output_schema: ::warden_sdk::__private::output_schema::<
                        <#ret_ty as ::warden_sdk::IntoToolResult>::Output,
                    >(),
                    annotations: ::warden_sdk::Annotations {
                        title: #title,
                        read_only: #read_only,
                        destructive: #destructive,
                        idempotent: #idempotent,
                        open_world: #open_world,
                    },
                }
            }

            fn call(arguments: &str) -> ::core::result::Result<::warden_sdk::__private::Value, ::warden_sdk::ToolError> {
                let result: #ret_ty = { #invoke };
                ::warden_sdk::IntoToolResult::into_tool_result(result)
            }
        }
    })
}

/// The function's doc comment as plain text: one leading space per line removed, blank
/// lines kept as paragraph breaks, surrounding whitespace trimmed.
fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if let Meta::NameValue(nv) = &attr.meta
            && nv.path.is_ident("doc")
            && let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
        {
            let value = s.value();
            lines.push(
                value
                    .strip_prefix(' ')
                    .unwrap_or(&value)
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    lines.join("\n").trim().to_owned()
}
