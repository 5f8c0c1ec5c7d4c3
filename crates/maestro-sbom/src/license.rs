//! Declared licenses as SPDX expressions.

/// Cargo's legacy `MIT/Apache-2.0` means `MIT OR Apache-2.0`.
pub fn normalize_legacy(raw: &str) -> String {
    let raw = raw.trim();
    if raw.contains('/') && !raw.contains(" OR ") && !raw.contains(" AND ") {
        raw.split('/')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" OR ")
    } else {
        raw.to_owned()
    }
}

/// The declared license as a valid SPDX expression in canonical form (`mit/Apache-2.0`
/// → `MIT OR Apache-2.0`, `GPL-2.0+` → `GPL-2.0-or-later`); `None` if it is not one.
pub fn spdx_expression(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let canonical = match spdx::Expression::canonicalize(raw) {
        Ok(Some(c)) => c,
        Ok(None) => raw.to_owned(),
        Err(_) => return None,
    };
    spdx::Expression::parse(&canonical).ok()?;
    Some(canonical)
}

/// The `LicenseRef-…` identifiers an expression uses (SPDX documents must define them).
pub fn license_refs(expression: &str) -> Vec<String> {
    let Ok(expr) = spdx::Expression::parse(expression) else {
        return Vec::new();
    };
    expr.requirements()
        .filter_map(|r| match &r.req.license {
            spdx::LicenseItem::Other(o) => Some(o.to_string()),
            spdx::LicenseItem::Spdx { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(normalize_legacy("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(
            spdx_expression("MIT OR Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            spdx_expression("mit/Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            spdx_expression("Apache-2.0 WITH LLVM-exception").as_deref(),
            Some("Apache-2.0 WITH LLVM-exception")
        );
        assert_eq!(
            spdx_expression("GPL-2.0+").as_deref(),
            Some("GPL-2.0-or-later")
        );
        assert_eq!(spdx_expression("SEE LICENSE IN LICENSE.md"), None);
        assert_eq!(spdx_expression("MIT AND (BSD-3-Clause"), None);
        assert_eq!(
            license_refs("MIT AND LicenseRef-Corp-1"),
            vec!["LicenseRef-Corp-1"]
        );
    }
}
