//! The verdict of an ICMP check (SPEC section 15), pure: how many of the
//! echo requests were answered.

use crate::health::CheckResult;

/// Echo requests per check.
pub const ECHOES: u32 = 3;

/// All answered: pass; some: warn (the service shows degraded); none: fail.
pub fn verdict(sent: u32, received: u32) -> (CheckResult, Option<String>) {
    match received {
        0 => (
            CheckResult::Fail,
            Some(format!("no echo reply ({sent} requests sent)")),
        ),
        r if r >= sent => (CheckResult::Pass, None),
        r => (
            CheckResult::Warn,
            Some(format!("{} of {sent} echo requests lost", sent - r)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_some_or_none_answered() {
        assert_eq!(verdict(3, 3), (CheckResult::Pass, None));
        assert_eq!(
            verdict(3, 2),
            (CheckResult::Warn, Some("1 of 3 echo requests lost".into()))
        );
        assert_eq!(verdict(3, 1).0, CheckResult::Warn);
        assert_eq!(
            verdict(3, 0),
            (
                CheckResult::Fail,
                Some("no echo reply (3 requests sent)".into())
            )
        );
    }
}
