//! Kubernetes' IP and CIDR libraries: `ip(s)`, `isIP(s)`, `ip.isCanonical(s)` and an IP's
//! `family`, `isUnspecified`, `isLoopback`, `isLinkLocalMulticast`, `isLinkLocalUnicast`,
//! `isGlobalUnicast`; `cidr(s)`, `isCIDR(s)` and a CIDR's `containsIP`, `containsCIDR` (an IP,
//! a CIDR or a string), `ip`, `masked`, `prefixLength`. As upstream: IPv4 octets with leading
//! zeros, IPv6 zones and IPv4-mapped IPv6 addresses are refused; a CIDR keeps its host bits
//! (`cidr('10.0.0.1/8').ip()` is 10.0.0.1, `masked()` clears them); the predicates are Go
//! netip's; `string()` gives the canonical text. CIDRs are read with the code base's one CIDR
//! grammar (`crate::services::cidr::Prefix`).

use std::net::IpAddr;

use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

use super::{opaque, wrap, Call};
use crate::services::cidr::{Prefix, PrefixError};

/// An IP address as a CEL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ip(pub IpAddr);

impl Opaque for Ip {
    fn runtime_type_name(&self) -> &str {
        "net.IP"
    }
}

/// A CIDR as a CEL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cidr(pub Prefix);

impl Opaque for Cidr {
    fn runtime_type_name(&self) -> &str {
        "net.CIDR"
    }
}

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("ip", ip);
    ctx.add_function("isIP", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        Ok(Value::Bool(parse_ip(call.global_string()?).is_ok()))
    });
    ctx.add_function("ip.isCanonical", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        let s = call.global_string()?;
        let addr = parse_ip(s).map_err(|e| call.error(e))?;
        Ok(Value::Bool(addr.to_string() == s))
    });
    ctx.add_function("family", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Int(if a.is_ipv4() { 4 } else { 6 })));
    ctx.add_function("isUnspecified", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Bool(a.is_unspecified())));
    ctx.add_function("isLoopback", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Bool(a.is_loopback())));
    ctx.add_function("isLinkLocalMulticast", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Bool(link_local_multicast(a))));
    ctx.add_function("isLinkLocalUnicast", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Bool(link_local_unicast(a))));
    ctx.add_function("isGlobalUnicast", |ftx: &FunctionContext| on_ip(ftx, |a| Value::Bool(global_unicast(a))));
    ctx.add_function("cidr", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        parse_cidr(call.global_string()?)
            .map(|p| wrap(Cidr(p)))
            .map_err(|e| call.error(format!("network address parse error during conversion from string: {e}")))
    });
    ctx.add_function("isCIDR", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        Ok(Value::Bool(parse_cidr(call.global_string()?).is_ok()))
    });
    ctx.add_function("containsIP", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        let net = this_cidr(&call)?;
        let addr = match call.args.as_slice() {
            [Value::String(s)] => parse_ip(s).map_err(|e| call.error(e))?,
            [v] => opaque::<Ip>(v).ok_or(ExecutionError::NoSuchOverload)?.0,
            _ => return Err(ExecutionError::NoSuchOverload),
        };
        Ok(Value::Bool(net.contains(&addr)))
    });
    ctx.add_function("containsCIDR", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        let net = this_cidr(&call)?;
        let other = match call.args.as_slice() {
            [Value::String(s)] => parse_cidr(s).map_err(|e| call.error(format!("network address parse error during conversion from string: {e}")))?,
            [v] => opaque::<Cidr>(v).ok_or(ExecutionError::NoSuchOverload)?.0,
            _ => return Err(ExecutionError::NoSuchOverload),
        };
        Ok(Value::Bool(net.contains_prefix(&other)))
    });
    ctx.add_function("masked", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        no_args(&call)?;
        Ok(wrap(Cidr(this_cidr(&call)?.masked())))
    });
    ctx.add_function("prefixLength", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        no_args(&call)?;
        Ok(Value::Int(this_cidr(&call)?.len as i64))
    });
}

/// `ip(s)`, or a CIDR's `ip()`.
fn ip(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    if call.this.is_some() {
        no_args(&call)?;
        return Ok(wrap(Ip(this_cidr(&call)?.addr)));
    }
    parse_ip(call.global_string()?).map(|a| wrap(Ip(a))).map_err(|e| call.error(e))
}

fn no_args(call: &Call) -> Result<(), ExecutionError> {
    if call.args.is_empty() {
        Ok(())
    } else {
        Err(ExecutionError::NoSuchOverload)
    }
}

fn this_cidr(call: &Call) -> Result<Prefix, ExecutionError> {
    opaque::<Cidr>(call.receiver()?).map(|c| c.0).ok_or(ExecutionError::NoSuchOverload)
}

fn on_ip(ftx: &FunctionContext, f: impl Fn(&IpAddr) -> Value) -> ResolveResult {
    let call = Call::of(ftx)?;
    no_args(&call)?;
    let a = opaque::<Ip>(call.receiver()?).ok_or(ExecutionError::NoSuchOverload)?;
    Ok(f(&a.0))
}

/// The text `string()` gives an IP or a CIDR.
pub(super) fn to_string(v: &Value) -> Option<String> {
    opaque::<Ip>(v).map(|a| a.0.to_string()).or_else(|| opaque::<Cidr>(v).map(|c| c.0.to_string()))
}

/// An address as upstream's library takes it, or its error.
fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let quoted = berth_names::go_quote(s);
    let addr: IpAddr = match s.parse() {
        Ok(a) => a,
        Err(_) => {
            if s.split_once('%').is_some_and(|(a, zone)| !zone.is_empty() && a.parse::<std::net::Ipv6Addr>().is_ok()) {
                return Err(format!("IP address {quoted} with zone value is not allowed"));
            }
            return Err(format!("IP Address {quoted} parse error during conversion from string: ParseAddr({quoted}): unable to parse IP"));
        }
    };
    if mapped(&addr) {
        return Err(format!("IPv4-mapped IPv6 address {quoted} is not allowed"));
    }
    Ok(addr)
}

fn parse_cidr(s: &str) -> Result<Prefix, String> {
    let p = Prefix::parse(s)
        .map_err(|e: PrefixError| format!("network address parse error during conversion from string: netip.ParsePrefix({}): {e}", berth_names::go_quote(s)))?;
    if mapped(&p.addr) {
        return Err(format!("IPv4-mapped IPv6 address {} is not allowed", berth_names::go_quote(s)));
    }
    Ok(p)
}

fn mapped(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

fn link_local_multicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    }
}

fn link_local_unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.octets()[..2] == [169, 254],
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Go's IsGlobalUnicast: not unspecified, loopback, multicast, link-local unicast, nor the
/// IPv4 broadcast address (private and unique-local addresses count).
fn global_unicast(a: &IpAddr) -> bool {
    if let IpAddr::V4(v4) = a {
        if v4.is_broadcast() {
            return false;
        }
    }
    !a.is_unspecified() && !a.is_loopback() && !a.is_multicast() && !link_local_unicast(a)
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn ip_addresses_as_upstream_documents_them() {
        check(&[
            ("isIP('127.0.0.1')", Ok(json!(true))),
            ("isIP('::1')", Ok(json!(true))),
            ("isIP('127.0.0.256')", Ok(json!(false))),
            ("isIP(':::1')", Ok(json!(false))),
            ("isIP('127.0.0.01')", Ok(json!(false))),
            ("isIP('::ffff:1.2.3.4')", Ok(json!(false))),
            ("isIP('fe80::1%eth0')", Ok(json!(false))),
            ("ip('127.0.0.256')", Err(r#"IP Address "127.0.0.256" parse error during conversion from string"#)),
            ("ip('fe80::1%eth0')", Err(r#"IP address "fe80::1%eth0" with zone value is not allowed"#)),
            ("ip('::ffff:1.2.3.4')", Err(r#"IPv4-mapped IPv6 address "::ffff:1.2.3.4" is not allowed"#)),
            ("ip.isCanonical('127.0.0.1')", Ok(json!(true))),
            ("ip.isCanonical('2001:db8::abcd')", Ok(json!(true))),
            ("ip.isCanonical('2001:DB8::ABCD')", Ok(json!(false))),
            ("ip.isCanonical('2001:db8::0:0:0:abcd')", Ok(json!(false))),
            ("ip.isCanonical('nope')", Err("parse error during conversion from string")),
            ("ip('127.0.0.1').family()", Ok(json!(4))),
            ("ip('::1').family()", Ok(json!(6))),
            ("ip('127.0.0.1').family() == 4", Ok(json!(true))),
            ("ip('0.0.0.0').isUnspecified()", Ok(json!(true))),
            ("ip('127.0.0.1').isUnspecified()", Ok(json!(false))),
            ("ip('::').isUnspecified()", Ok(json!(true))),
            ("ip('::1').isUnspecified()", Ok(json!(false))),
            ("ip('127.0.0.1').isLoopback()", Ok(json!(true))),
            ("ip('192.168.0.1').isLoopback()", Ok(json!(false))),
            ("ip('::1').isLoopback()", Ok(json!(true))),
            ("ip('2001:db8::abcd').isLoopback()", Ok(json!(false))),
            ("ip('224.0.0.1').isLinkLocalMulticast()", Ok(json!(true))),
            ("ip('224.0.1.1').isLinkLocalMulticast()", Ok(json!(false))),
            ("ip('ff02::1').isLinkLocalMulticast()", Ok(json!(true))),
            ("ip('fd00::1').isLinkLocalMulticast()", Ok(json!(false))),
            ("ip('169.254.169.254').isLinkLocalUnicast()", Ok(json!(true))),
            ("ip('192.168.0.1').isLinkLocalUnicast()", Ok(json!(false))),
            ("ip('fe80::1').isLinkLocalUnicast()", Ok(json!(true))),
            ("ip('fd80::1').isLinkLocalUnicast()", Ok(json!(false))),
            ("ip('192.168.0.1').isGlobalUnicast()", Ok(json!(true))),
            ("ip('255.255.255.255').isGlobalUnicast()", Ok(json!(false))),
            ("ip('2001:db8::abcd').isGlobalUnicast()", Ok(json!(true))),
            ("ip('ff00::1').isGlobalUnicast()", Ok(json!(false))),
            ("ip('10.0.0.1') == ip('10.0.0.1')", Ok(json!(true))),
            ("ip('::1') == ip('0:0::1')", Ok(json!(true))),
            ("ip('10.0.0.1') == ip('10.0.0.2')", Ok(json!(false))),
            ("string(ip('2001:DB8::0:0:ABCD'))", Ok(json!("2001:db8::abcd"))),
            ("ip(1)", Err("no such overload")),
        ]);
    }

    #[test]
    fn cidrs_as_upstream_documents_them() {
        check(&[
            ("isCIDR('192.168.0.0/16')", Ok(json!(true))),
            ("isCIDR('::1/128')", Ok(json!(true))),
            ("isCIDR('192.168.0.0/33')", Ok(json!(false))),
            ("isCIDR('::1/129')", Ok(json!(false))),
            ("isCIDR('::ffff:1.2.3.4/24')", Ok(json!(false))),
            (
                "cidr('192.168.0.0/')",
                Err(
                    r#"network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix("192.168.0.0/"): bad bits after slash: """#,
                ),
            ),
            ("cidr('192.168.0.0/33')", Err("prefix length out of range")),
            ("cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))", Ok(json!(true))),
            ("cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))", Ok(json!(false))),
            ("cidr('192.168.0.0/24').containsIP('192.168.0.1')", Ok(json!(true))),
            ("cidr('192.168.0.0/24').containsIP('192.168.1.1')", Ok(json!(false))),
            ("cidr('192.168.0.0/24').containsIP('::1')", Ok(json!(false))),
            ("cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))", Ok(json!(true))),
            ("cidr('192.168.1.0/24').containsCIDR(cidr('192.168.2.0/24'))", Ok(json!(false))),
            ("cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')", Ok(json!(true))),
            ("cidr('192.168.1.0/24').containsCIDR('192.168.2.0/24')", Ok(json!(false))),
            ("cidr('192.168.0.0/24').containsCIDR('192.168.0.0/23')", Ok(json!(false))),
            ("cidr('2001:db8::/32').containsCIDR('2001:db8::/33')", Ok(json!(true))),
            ("cidr('2001:db8::/32').containsIP('2001:dc8::1')", Ok(json!(false))),
            ("cidr('192.168.0.1/24').ip() == ip('192.168.0.1')", Ok(json!(true))),
            ("cidr('192.168.0.1/24').ip().family()", Ok(json!(4))),
            ("cidr('::1/128').ip() == ip('::1')", Ok(json!(true))),
            ("cidr('::1/128').ip().family()", Ok(json!(6))),
            ("cidr('192.168.0.0/24').masked() == cidr('192.168.0.0/24')", Ok(json!(true))),
            ("cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')", Ok(json!(true))),
            ("cidr('192.168.0.0/24') == cidr('192.168.0.0/24').masked()", Ok(json!(true))),
            ("cidr('192.168.0.1/24') == cidr('192.168.0.1/24').masked()", Ok(json!(false))),
            ("cidr('2001:db8:1::/32').masked() == cidr('2001:db8::/32')", Ok(json!(true))),
            ("cidr('192.168.0.0/16').prefixLength()", Ok(json!(16))),
            ("cidr('::1/128').prefixLength()", Ok(json!(128))),
            ("string(cidr('192.168.0.0/24'))", Ok(json!("192.168.0.0/24"))),
            ("string(cidr('192.168.0.1/24').masked())", Ok(json!("192.168.0.0/24"))),
            ("string(true)", Ok(json!("true"))),
        ]);
    }
}
