//! `get_ref`, `get_mut` and `into_inner` for the service or connector a
//! wrapper holds, written once (as tower-http's
//! `define_inner_service_accessors!`), so every wrapper's accessors read
//! and behave alike.

/// In an `impl` block: `get_ref` and `get_mut` of the wrapper's `$field`,
/// of type `$ty`, described in the docs as `$what`; and `into_inner`
/// unless the arm starts with `borrow`.
macro_rules! inner_accessors {
    ($field:ident: $ty:ty, $what:literal) => {
        $crate::accessors::inner_accessors!(borrow $field: $ty, $what);

        #[doc = concat!("Takes out ", $what, ".")]
        pub fn into_inner(self) -> $ty {
            self.$field
        }
    };
    (borrow $field:ident: $ty:ty, $what:literal) => {
        #[doc = concat!("A reference to ", $what, ".")]
        pub fn get_ref(&self) -> &$ty {
            &self.$field
        }

        #[doc = concat!("A mutable reference to ", $what, ".")]
        pub fn get_mut(&mut self) -> &mut $ty {
            &mut self.$field
        }
    };
}

pub(crate) use inner_accessors;
