//! BIN routing: the longest configured prefix of the card number picks the issuer.

/// Prefixes sorted longest first, so the first match is the longest one.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    prefixes: Vec<(Vec<u8>, usize)>,
    default: Option<usize>,
}

impl Routes {
    pub(crate) fn new(routes: &[(String, usize)], default: Option<usize>) -> Routes {
        let mut prefixes: Vec<_> = routes
            .iter()
            .map(|(p, i)| (p.as_bytes().to_vec(), *i))
            .collect();
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Routes { prefixes, default }
    }

    pub(crate) fn issuer(&self, pan: &[u8]) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| pan.starts_with(p))
            .map(|&(_, i)| i)
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_then_default() {
        let routes = Routes::new(
            &[("4".into(), 0), ("476173".into(), 1), ("47".into(), 2)],
            Some(3),
        );
        assert_eq!(routes.issuer(b"4761739001010010"), Some(1));
        assert_eq!(routes.issuer(b"4711111111111111"), Some(2));
        assert_eq!(routes.issuer(b"4000000000000002"), Some(0));
        assert_eq!(routes.issuer(b"5100000000000000"), Some(3));
        assert_eq!(Routes::new(&[], None).issuer(b"5100000000000000"), None);
    }
}
