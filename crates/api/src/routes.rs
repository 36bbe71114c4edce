//! Every route, in one table.

pub mod exceptions;
pub mod system;

use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(system::healthz).service(system::readyz).service(
        scope("/v1")
            .service(system::me)
            .service(system::policy)
            .service(exceptions::create_exception)
            .service(exceptions::list_exceptions)
            .service(exceptions::get_exception)
            .service(exceptions::patch_exception)
            .service(exceptions::submit_exception)
            .service(exceptions::return_exception)
            .service(exceptions::approve_exception)
            .service(exceptions::reject_exception)
            .service(exceptions::withdraw_exception)
            .service(exceptions::revoke_exception)
            .service(exceptions::close_exception)
            .service(exceptions::assess_exception)
            .service(exceptions::add_control)
            .service(exceptions::change_control)
            .service(exceptions::exception_history)
            .service(exceptions::request_renewal)
            .service(exceptions::review_exception)
            .service(exceptions::check_control),
    );
}
