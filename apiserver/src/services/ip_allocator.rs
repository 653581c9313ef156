//! Cluster IP allocation over an address book: the IPAddress objects (networking.k8s.io/v1),
//! one per allocated IP, named by the IP. Claiming an address is creating its object, so the
//! store's create-if-absent is what keeps two Services (or two servers) from getting the same
//! IP; the book's view of what is taken (a watch cache) only steers the search. Automatic
//! allocation starts at a random address of a range's upper (dynamic) band and wraps, then
//! tries the lower (static) band, as upstream's allocator. This module chooses addresses; the
//! book ([`AddressBook`]) stores them.

use std::net::IpAddr;

use async_trait::async_trait;

use super::cidr::{Cidr, Family};

/// The Service an address is allocated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

/// Why a claim failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    /// Someone else holds the address (the object exists).
    #[error("already claimed")]
    Taken,
    #[error("{0}")]
    Other(String),
}

/// Where allocated addresses are kept.
#[async_trait]
pub trait AddressBook: Send + Sync {
    /// Whether `ip` is taken as far as this server has seen (may lag behind the store).
    fn is_taken(&self, ip: &IpAddr) -> bool;
    /// Records `ip` as `owner`'s; [`ClaimError::Taken`] when it is already recorded.
    async fn claim(&self, ip: &IpAddr, family: Family, owner: &Owner) -> Result<(), ClaimError>;
    /// Forgets `ip` (nothing when it is not recorded).
    async fn release(&self, ip: &IpAddr) -> Result<(), ClaimError>;
}

/// Why no address was allocated, in upstream's words (`failed to allocate IP X: <this>`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("range is full")]
    Full,
    #[error("provided IP is already allocated")]
    Allocated,
    #[error("the provided network does not match the current range")]
    MismatchedNetwork,
    #[error("{0}")]
    Store(String),
}

/// Claims the requested `ip` for `owner` if it lies in one of `cidrs` and is free. With
/// `dry_run`, only checks.
pub async fn allocate(book: &dyn AddressBook, cidrs: &[Cidr], ip: &IpAddr, owner: &Owner, dry_run: bool) -> Result<(), AllocError> {
    if !cidrs.iter().any(|c| c.assignable(ip)) {
        return Err(AllocError::MismatchedNetwork);
    }
    if dry_run {
        return if book.is_taken(ip) { Err(AllocError::Allocated) } else { Ok(()) };
    }
    match book.claim(ip, Family::of(ip), owner).await {
        Ok(()) => Ok(()),
        Err(ClaimError::Taken) => Err(AllocError::Allocated),
        Err(ClaimError::Other(e)) => Err(AllocError::Store(e)),
    }
}

/// Claims a free address of `family` for `owner` from `cidrs`: the dynamic band first, from a
/// random start, then the static band. With `dry_run`, returns a free address without claiming.
pub async fn allocate_next(book: &dyn AddressBook, cidrs: &[Cidr], family: Family, owner: &Owner, dry_run: bool) -> Result<IpAddr, AllocError> {
    for cidr in cidrs.iter().filter(|c| c.family() == family) {
        let (fixed, dynamic) = cidr.bands();
        for band in [dynamic, fixed] {
            let len = band.end - band.start;
            if len == 0 {
                continue;
            }
            let start = random() % len;
            for i in 0..len {
                let ip = cidr.nth(band.start + (start + i) % len);
                if book.is_taken(&ip) {
                    continue;
                }
                if dry_run {
                    return Ok(ip);
                }
                match book.claim(&ip, family, owner).await {
                    Ok(()) => return Ok(ip),
                    // lost a race the book had not seen yet: the next address
                    Err(ClaimError::Taken) => continue,
                    Err(ClaimError::Other(e)) => return Err(AllocError::Store(e)),
                }
            }
        }
    }
    Err(AllocError::Full)
}

fn random() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An address book in memory. `stale` makes is_taken always answer "free", as a cache that
    /// has not caught up, so only claims decide.
    #[derive(Default)]
    pub struct FakeBook {
        pub taken: Mutex<HashMap<IpAddr, Owner>>,
        pub stale: bool,
    }

    #[async_trait]
    impl AddressBook for FakeBook {
        fn is_taken(&self, ip: &IpAddr) -> bool {
            !self.stale && self.taken.lock().unwrap().contains_key(ip)
        }
        async fn claim(&self, ip: &IpAddr, _family: Family, owner: &Owner) -> Result<(), ClaimError> {
            tokio::task::yield_now().await;
            let mut t = self.taken.lock().unwrap();
            if t.contains_key(ip) {
                return Err(ClaimError::Taken);
            }
            t.insert(*ip, owner.clone());
            Ok(())
        }
        async fn release(&self, ip: &IpAddr) -> Result<(), ClaimError> {
            self.taken.lock().unwrap().remove(ip);
            Ok(())
        }
    }

    fn owner(n: usize) -> Owner {
        Owner { namespace: "default".into(), name: format!("s{n}") }
    }

    fn cidrs(s: &str) -> Vec<Cidr> {
        super::super::cidr::parse_list(s).unwrap()
    }

    #[tokio::test]
    async fn dynamic_allocation_uses_the_upper_band_first() {
        let book = FakeBook::default();
        let c = cidrs("10.43.0.0/16");
        for i in 0..20 {
            let ip = allocate_next(&book, &c, Family::IPv4, &owner(i), false).await.unwrap();
            let IpAddr::V4(v4) = ip else { panic!() };
            assert!(u32::from(v4) >= u32::from(std::net::Ipv4Addr::new(10, 43, 1, 1)), "{ip} in the static band");
        }
    }

    #[tokio::test]
    async fn the_static_band_is_used_when_the_dynamic_band_is_full() {
        let book = FakeBook::default();
        let c = cidrs("10.0.0.0/27"); // 30 addresses: 16 static, 14 dynamic
        let mut got = vec![];
        for i in 0..30 {
            got.push(allocate_next(&book, &c, Family::IPv4, &owner(i), false).await.unwrap());
        }
        let first_14: Vec<u8> = got[..14].iter().map(|ip| if let IpAddr::V4(v) = ip { v.octets()[3] } else { 0 }).collect();
        assert!(first_14.iter().all(|o| *o >= 17), "{first_14:?}");
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 30);
        assert_eq!(allocate_next(&book, &c, Family::IPv4, &owner(99), false).await, Err(AllocError::Full));
    }

    #[tokio::test]
    async fn explicit_addresses_must_be_free_and_in_range() {
        let book = FakeBook::default();
        let c = cidrs("10.43.0.0/16");
        let ip: IpAddr = "10.43.0.5".parse().unwrap();
        allocate(&book, &c, &ip, &owner(1), false).await.unwrap();
        assert_eq!(allocate(&book, &c, &ip, &owner(2), false).await, Err(AllocError::Allocated));
        assert_eq!(allocate(&book, &c, &"10.96.0.5".parse().unwrap(), &owner(2), false).await, Err(AllocError::MismatchedNetwork));
        assert_eq!(allocate(&book, &c, &"10.43.0.0".parse().unwrap(), &owner(2), false).await, Err(AllocError::MismatchedNetwork));
        book.release(&ip).await.unwrap();
        allocate(&book, &c, &ip, &owner(2), false).await.unwrap();
    }

    #[tokio::test]
    async fn dry_run_claims_nothing() {
        let book = FakeBook::default();
        let c = cidrs("10.43.0.0/16");
        allocate_next(&book, &c, Family::IPv4, &owner(1), true).await.unwrap();
        allocate(&book, &c, &"10.43.0.9".parse().unwrap(), &owner(1), true).await.unwrap();
        assert!(book.taken.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_allocations_on_a_stale_view_never_share_an_address() {
        let book = Arc::new(FakeBook { stale: true, ..Default::default() });
        let c = cidrs("10.0.0.0/26"); // 62 addresses for 62 callers: every one must be used once
        let mut tasks = vec![];
        for i in 0..62 {
            let (book, c) = (book.clone(), c.clone());
            tasks.push(tokio::spawn(async move { allocate_next(&*book, &c, Family::IPv4, &owner(i), false).await }));
        }
        let mut got = vec![];
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 62);
        assert_eq!(allocate_next(&*book, &c, Family::IPv4, &owner(99), false).await, Err(AllocError::Full));
    }
}
