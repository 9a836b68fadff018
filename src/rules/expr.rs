//! CEL expressions (`expr:`), for conditions label matchers cannot state:
//! annotations, comparisons between labels, numbers. Compiled at load;
//! evaluated against the variables `labels`, `annotations`, `status`,
//! `severity` and `source`. Anything but a `true` result, including an
//! evaluation error such as reading a missing map key, means "no match".

use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value};

use crate::alert::Alert;

/// The standard library, built once: building it registers every overload.
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

pub(super) struct Expr {
    source: String,
    program: Program,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    pub(super) fn compile(source: &str) -> Result<Expr, String> {
        let program = Program::compile(source).map_err(|errs| {
            // cel prints each error with a multi-line caret snippet; one line each here.
            errs.errors
                .iter()
                .map(|e| format!("{} (at expression column {})", e.msg, e.pos.1 + 1))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        Ok(Expr {
            source: source.to_string(),
            program,
        })
    }

    pub(super) fn holds(&self, vars: &Vars) -> bool {
        match &vars.0 {
            Some(ctx) => matches!(self.program.execute(ctx), Ok(Value::Bool(true))),
            None => false,
        }
    }
}

/// One alert's variables, built once per evaluation and shared by every rule
/// with an expression. `None` if the alert could not be converted, in which
/// case no expression holds.
pub(super) struct Vars(Option<Context<'static, 'static>>);

impl Vars {
    pub(super) fn of(alert: &Alert) -> Vars {
        let mut ctx = Context::with_env(STDLIB.clone());
        let ok = ctx.add_variable("labels", &alert.labels).is_ok()
            && ctx.add_variable("annotations", &alert.annotations).is_ok()
            && ctx.add_variable("status", alert.status.as_str()).is_ok()
            && ctx
                .add_variable("severity", alert.severity.as_deref().unwrap_or(""))
                .is_ok()
            && ctx.add_variable("source", alert.source.as_str()).is_ok();
        Vars(ok.then_some(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::alert;

    fn holds(expr: &str) -> bool {
        let a = alert(&[("alertname", "TargetDown"), ("env", "prod")]);
        Expr::compile(expr).unwrap().holds(&Vars::of(&a))
    }

    #[test]
    fn true_expression_holds_and_false_does_not() {
        assert!(holds(
            r#"labels.env == "prod" && annotations.summary.contains("down")"#
        ));
        assert!(holds(
            r#"status == "firing" && severity == "critical" && source == "alertmanager""#
        ));
        assert!(!holds(r#"labels.env == "dev""#));
    }

    #[test]
    fn evaluation_error_or_non_bool_result_is_no_match() {
        assert!(!holds(r#"labels.missing == "x""#));
        assert!(!holds("int(labels.env) > 1"));
        assert!(!holds(r#"labels.env"#));
        assert!(holds(r#"!has(labels.missing) || labels.missing == "x""#));
    }

    #[test]
    fn runtime_failures_are_no_match_rather_than_panics() {
        for expr in [
            "1 / 0 == 1",
            "[1][5] == 1",
            "labels.env.x == 1",
            "size(labels) / 0 > 1",
        ] {
            assert!(!holds(expr), "{expr}");
        }
        for src in ["", "(((", "labels[", "\"open", "labels.env ==="] {
            assert!(Expr::compile(src).is_err(), "{src}");
        }
    }

    #[test]
    fn syntax_error_is_reported_on_one_line() {
        let err = Expr::compile(r#"labels.env == "#).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("column"), "{err}");
    }
}
